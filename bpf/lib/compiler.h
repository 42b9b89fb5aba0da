/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Branch hints (the fast path laid out as the fall-through, slow paths out of
 * line) and compiler ordering.
 */
#ifndef EINAT_COMPILER_H
#define EINAT_COMPILER_H

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* One load the compiler neither repeats, drops nor moves past another READ_ONCE. */
#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
/* No memory access moves across it at compile time (x86 keeps loads in order itself). */
#define barrier() asm volatile("" ::: "memory")

#endif
