/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Branch hints: the fast path laid out as the fall-through, slow paths out of line. */
#ifndef EINAT_COMPILER_H
#define EINAT_COMPILER_H

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#endif
