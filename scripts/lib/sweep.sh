#!/usr/bin/env bash
# What a test run leaves behind, by its prefix (EINAT_TEST_PREFIX, see tests/lib/netns.ts
# testPrefix): the network namespaces named "<prefix>-..." (with the processes in them) and the
# bpffs folders /run/<prefix>-test-bpffs-*. Sourced by scripts/test.sh.

# Lists them, one per line: "netns NAME" or "bpffs DIR".
leftovers() {
  local ns d
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${EINAT_TEST_PREFIX}-" || true); do
    echo "netns $ns"
  done
  for d in /run/"${EINAT_TEST_PREFIX}"-test-bpffs-*; do
    [[ -d $d ]] && echo "bpffs $d"
  done
  return 0
}

# Removes them: the processes in each namespace (by PID), the namespace, the bpffs mount and its
# folder.
sweep() {
  local kind what pid
  while read -r kind what; do
    case $kind in
      netns)
        for pid in $(ip netns pids "$what" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
        ip netns del "$what" 2>/dev/null
        ;;
      bpffs)
        umount "$what" 2>/dev/null || umount -l "$what" 2>/dev/null
        rmdir "$what" 2>/dev/null
        ;;
    esac
  done < <(leftovers)
  return 0
}
