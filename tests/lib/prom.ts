/** The Prometheus text format, as the tests read einat's metrics endpoint. */

/** Parses the Prometheus text format into `name{labels}` → value. */
export function parseProm(text: string): Map<string, number> {
  const out = new Map<string, number>();
  // Text format 0.0.4: a metric's lines are one group, its HELP and TYPE first.
  const done = new Set<string>();
  let current = "";
  for (const line of text.split("\n")) {
    if (!line) continue;
    const name = line.startsWith("#") ? line.split(" ")[2] : line.replace(/[{ ].*$/, "");
    if (name !== current) {
      if (done.has(name)) throw new Error(`metric ${name} split into groups, again at: ${line}`);
      if (!line.startsWith("# HELP ")) throw new Error(`${name} does not start with HELP`);
      if (current) done.add(current);
      current = name;
    }
    if (line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`bad metrics line: ${line}`);
    out.set(m[1] + (m[2] ?? ""), Number(m[3]));
  }
  return out;
}
