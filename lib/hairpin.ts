/**
 * Hairpin routing (RFC 4787 REQ-9): traffic from internal interfaces to the
 * router's own external addresses is routed out of the external interface
 * (a table of /32 or /128 routes, chosen by `iif` + protocol rules ahead of
 * the local table, which moves to `ipv4_local_rule_pref`), where the egress
 * program translates it both ways and turns it around to the internal host.
 * Everything added is tracked and removed again; rules someone else added
 * are never removed.
 * @module
 */

import type { HairpinRoute } from "./config/types.ts";
import { formatAddr } from "./config/cidr.ts";
import * as log from "./log.ts";
import { type Family, RT_TABLE } from "./netlink/msg.ts";
import { neighRequest } from "./netlink/neigh.ts";
import {
  addRoute,
  addRule,
  delRoute,
  delRule,
  dumpLinks,
  dumpRules,
  request,
  type RouteSpec,
  type RuleSpec,
} from "./netlink/rtnl.ts";

const PROTO = { tcp: 6, udp: 17, icmp: 1 } as Record<string, number>;
/** ICMPv6's protocol number: "icmp" in an IPv6 hairpin route means ICMPv6. */
const IPPROTO_ICMPV6 = 58;
/** `protocol kernel`: keeps systemd-networkd from removing the moved local rule. */
const RTPROT_KERNEL = 2;

/** What hairpin routing of one family added, for removal. */
export interface HairpinState {
  family: Family;
  rules: RuleSpec[];
  routes: RouteSpec[];
  neigh: { ifindex: number; dst: Uint8Array } | null;
  /** Whether this state moved the local rule (and should move it back). */
  movedLocal: boolean;
}

/** Why an add can fail harmlessly. */
function exists(e: unknown): boolean {
  return /exists/i.test((e as Error).message);
}

async function moveLocalRule(family: Family, localPref: number): Promise<boolean> {
  const rules = await dumpRules(family);
  const local = rules.filter((r) =>
    r.table === RT_TABLE.LOCAL && (r.action ?? 1) === 1 && !r.iifname
  );
  if (local.length > 0 && local.every((r) => (r.priority ?? 0) === localPref)) return false;
  try {
    await addRule({ family, priority: localPref, table: RT_TABLE.LOCAL, protocol: RTPROT_KERNEL });
  } catch (e) {
    if (!exists(e)) throw e;
  }
  let moved = false;
  for (const r of local) {
    if ((r.priority ?? 0) < localPref) {
      await delRule({ family, priority: r.priority ?? 0, table: RT_TABLE.LOCAL });
      moved = true;
    }
  }
  if (moved) log.info("moved the local routing rule", { family: `IPv${family}`, pref: localPref });
  return moved;
}

/**
 * Installs hairpin routing for `dests` (external addresses) of one family on
 * the external interface `ifindex`.
 */
export async function hairpinUp(
  family: Family,
  ifindex: number,
  route: HairpinRoute,
  localPref: number,
  dests: Uint8Array[],
): Promise<HairpinState> {
  const st: HairpinState = { family, rules: [], routes: [], neigh: null, movedLocal: false };
  if (!route.enable || route.internalIfNames.length === 0 || dests.length === 0) return st;
  try {
    const link = (await dumpLinks()).find((l) => l.ifindex === ifindex);
    if (!link?.address) throw new Error(`interface ${ifindex} has no link-layer address`);
    // The first external address is resolvable on the link: routes to the
    // others use it as gateway, and packets reach TC egress.
    const gw = dests[0];
    await request(neighRequest("new", { family, ifindex, dst: gw, lladdr: link.address }));
    st.neigh = { ifindex, dst: gw };
    for (const d of dests) {
      const r: RouteSpec = {
        family,
        dst: d,
        table: route.tableId,
        oif: ifindex,
        ...(d === gw ? {} : { gateway: gw }),
      };
      try {
        await addRoute(r);
      } catch (e) {
        if (!exists(e)) throw e;
      }
      st.routes.push(r);
    }
    st.movedLocal = await moveLocalRule(family, localPref);
    for (const iif of route.internalIfNames) {
      for (const p of route.ipProtocols) {
        const r: RuleSpec = {
          family,
          priority: route.ipRulePref,
          iifname: iif,
          ipProto: family === 6 && p === "icmp" ? IPPROTO_ICMPV6 : PROTO[p],
          table: route.tableId,
        };
        try {
          await addRule(r);
        } catch (e) {
          if (!exists(e)) throw e;
        }
        st.rules.push(r);
      }
    }
    log.info("hairpin routing installed", {
      family: `IPv${family}`,
      table: route.tableId,
      pref: route.ipRulePref,
      internal: route.internalIfNames.join(","),
      dests: dests.map(formatAddr).join(","),
    });
  } catch (e) {
    await hairpinDown(st);
    throw e;
  }
  return st;
}

/** Removes what {@link hairpinUp} added. */
export async function hairpinDown(st: HairpinState, localPref?: number): Promise<void> {
  const quiet = async (what: string, f: () => Promise<void>) => {
    try {
      await f();
    } catch (e) {
      log.debug(`hairpin cleanup: ${what}`, { error: (e as Error).message });
    }
  };
  for (const r of st.rules.splice(0)) await quiet("rule", () => delRule(r));
  for (const r of st.routes.splice(0)) await quiet("route", () => delRoute(r));
  if (st.neigh) {
    const n = st.neigh;
    await quiet("neigh", () => request(neighRequest("del", { family: st.family, ...n })));
    st.neigh = null;
  }
  if (st.movedLocal && localPref !== undefined) {
    // Put the local rule back at 0 for a router without einat.
    const fam = st.family;
    await quiet("local rule", () => addRule({ family: fam, priority: 0, table: RT_TABLE.LOCAL }));
    await quiet(
      "local rule",
      () => delRule({ family: fam, priority: localPref, table: RT_TABLE.LOCAL }),
    );
    st.movedLocal = false;
  }
}
