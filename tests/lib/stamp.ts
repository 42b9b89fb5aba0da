/**
 * Edits the version stamp (`einat_meta`) of a pinned state folder, as an einat of another layout
 * would have written it.
 * @module
 */
import * as bpf from "../../lib/ffi/libbpf.ts";
import { closeFd } from "../../lib/ffi/libc.ts";
import {
  decodeMeta,
  encodeMeta,
  META_NAME,
  META_VALUE_SIZE,
  type MetaDoc,
} from "../../lib/state/pin.ts";

/** Rewrites the stamp in `dir` (an interface's pin folder) after `edit` changed its maps' entries. */
export function tamperStamp(
  dir: string,
  edit: (maps: MetaDoc["maps"]) => void,
): void {
  tamperMeta(dir, (doc) => edit(doc.maps));
}

/** Rewrites the stamp in `dir` after `edit` changed the document. */
export function tamperMeta(dir: string, edit: (doc: MetaDoc) => void): void {
  const fd = bpf.objGetPinned(`${dir}/${META_NAME}`);
  try {
    const key = new Uint8Array(4);
    const doc = decodeMeta(bpf.mapLookup(fd, key, META_VALUE_SIZE)!)!;
    edit(doc);
    bpf.mapUpdate(fd, key, encodeMeta(doc));
  } finally {
    closeFd(fd);
  }
}
