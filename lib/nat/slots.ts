/**
 * Slots of external addresses (bpf/einat.h, struct slot_table): each external address that
 * bindings are made on has one, which places its mapping records (bpf/lib/records.h). A slot
 * stays with its address while the address is there; the bindings of an address that left are
 * purged before its slot is given to another (lib/nat/apply.ts).
 * @module
 */
import type { NatPlan } from "./plan.ts";
import { sameAddr, type SlotEntry } from "./records.ts";

/**
 * The slot table for `plan`: the current slots kept (those of addresses that left too, until
 * their bindings are purged), and free slots below `count` given to the plan's addresses that
 * have none and that mappings are made on, default externals first. `unplaced`: addresses left without a slot (no new
 * mappings are made on them).
 */
export function assignSlots(
  current: SlotEntry[],
  plan: NatPlan,
  count: number,
): { table: SlotEntry[]; unplaced: { family: 4 | 6; addr: Uint8Array }[] } {
  const table = [...current];
  const unplaced: { family: 4 | 6; addr: Uint8Array }[] = [];
  const key = (f: number, a: Uint8Array) => `${f}/${a.join(".")}`;
  const have = new Set(table.map((s) => key(s.family, s.addr)));
  // Only addresses mappings are made on: not no_snat ones, nor internal entries.
  const wanted = [plan.defaultExt[4], plan.defaultExt[6], ...plan.resolved]
    .filter((r) => r !== undefined)
    .filter((r) => !r.spec.noSnat && !r.spec.isInternal);
  for (const r of wanted) {
    const k = key(r.family, r.addr);
    if (have.has(k)) continue;
    have.add(k);
    const used = new Set(table.map((s) => s.slot));
    let slot = 0;
    while (slot < count && used.has(slot)) slot++;
    if (slot < count) table.push({ slot, family: r.family, addr: r.addr });
    else unplaced.push({ family: r.family, addr: r.addr });
  }
  return { table: table.sort((a, b) => a.slot - b.slot), unplaced };
}

/** The slots whose address the plan no longer has. */
export function departedSlots(current: SlotEntry[], plan: NatPlan): SlotEntry[] {
  return current.filter((s) =>
    !plan.resolved.some((r) => r.family === s.family && sameAddr(r.addr, s.addr))
  );
}
