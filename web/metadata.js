// A photo's EXIF and ICC colour profile, read from the source file and written into the page's saved file, as the
// bundle's run_embedder.py does with Pillow (read_photo / write_photo). The pixels the page saves are upright (the
// browser applied the EXIF orientation when decoding), so the carried EXIF says orientation 1, as Python's does.
// Written by hand: the browser's canvas encoders drop all metadata and no browser API writes PNG or JPEG metadata.
//
// Read: a JPEG's APP1 "Exif" and APP2 "ICC_PROFILE" segments (a profile split over several, joined in order), a PNG's
// eXIf and iCCP chunks. Written: into a PNG, iCCP (zlib, CompressionStream) and eXIf chunks after IHDR; into a JPEG,
// APP1 and APP2 segments after SOI (and after the encoder's JFIF APP0 when it wrote one).

const ICC_SIG = 'ICC_PROFILE\0';
const EXIF_SIG = 'Exif\0\0';

const ascii = (b, at, n) => String.fromCharCode(...b.subarray(at, at + n));
const u16be = (b, at) => (b[at] << 8) | b[at + 1];
const u32be = (b, at) => ((b[at] << 24) >>> 0) + (b[at + 1] << 16) + (b[at + 2] << 8) + b[at + 3];

async function inflate(bytes) {
  return new Uint8Array(await new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'))).arrayBuffer());
}

async function deflate(bytes) {
  return new Uint8Array(await new Response(new Blob([bytes]).stream().pipeThrough(new CompressionStream('deflate'))).arrayBuffer());
}

/** A copy of a TIFF-structured EXIF block whose IFD0 orientation tag (0x0112), when there, says 1 (upright). */
export function uprightExif(tiff) {
  const t = new Uint8Array(tiff);
  if (t.length < 8) return t;
  const big = t[0] === 0x4d;
  const u16 = (at) => (big ? (t[at] << 8) | t[at + 1] : (t[at + 1] << 8) | t[at]);
  const ifd = big ? u32be(t, 4) : ((t[7] << 24) >>> 0) + (t[6] << 16) + (t[5] << 8) + t[4];
  if (ifd + 2 > t.length) return t;
  for (let i = 0, n = u16(ifd); i < n && ifd + 14 + 12 * i <= t.length; i++) {
    const e = ifd + 2 + 12 * i;
    if (u16(e) === 0x0112 && u16(e + 2) === 3) {
      t[e + 8] = big ? 0 : 1; t[e + 9] = big ? 1 : 0;
    }
  }
  return t;
}

/** {exif, icc} of a PNG or JPEG file (Uint8Array each: the TIFF block, the raw profile; null when absent). */
export async function readMetadata(blob) {
  const b = new Uint8Array(await blob.arrayBuffer());
  let exif = null, icc = null;
  if (b[0] === 0xff && b[1] === 0xd8) {
    const parts = [];
    for (let i = 2; i + 4 <= b.length && b[i] === 0xff;) {
      const marker = b[i + 1], len = u16be(b, i + 2);
      if (marker === 0xda || marker === 0xd9 || len < 2) break;  // start of scan: no metadata after it
      if (marker === 0xe1 && !exif && ascii(b, i + 4, 6) === EXIF_SIG) exif = b.slice(i + 10, i + 2 + len);
      if (marker === 0xe2 && ascii(b, i + 4, 12) === ICC_SIG) parts.push([b[i + 16], b.subarray(i + 18, i + 2 + len)]);
      i += 2 + len;
    }
    if (parts.length) {
      parts.sort((x, y) => x[0] - y[0]);
      icc = new Uint8Array(await new Blob(parts.map((p) => p[1])).arrayBuffer());
    }
  } else if (ascii(b, 1, 3) === 'PNG') {
    for (let i = 8; i + 12 <= b.length;) {
      const len = u32be(b, i), type = ascii(b, i + 4, 4), data = b.subarray(i + 8, i + 8 + len);
      if (type === 'eXIf') exif = data.slice();
      if (type === 'iCCP') icc = await inflate(data.subarray(data.indexOf(0) + 2));  // name, NUL, method 0, zlib data
      if (type === 'IEND') break;
      i += 12 + len;
    }
  }
  return {exif: exif && uprightExif(exif), icc};
}

const CRC_TABLE = Array.from({length: 256}, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function pngChunk(type, data) {
  const out = new Uint8Array(12 + data.length), view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  let c = 0xffffffff;
  for (let i = 4; i < 8 + data.length; i++) c = CRC_TABLE[(c ^ out[i]) & 0xff] ^ (c >>> 8);
  view.setUint32(8 + data.length, (c ^ 0xffffffff) >>> 0);
  return out;
}

function jpegSegment(marker, signature, data) {
  const head = new Uint8Array(4 + signature.length);
  head[0] = 0xff; head[1] = marker;
  new DataView(head.buffer).setUint16(2, 2 + signature.length + data.length);
  for (let i = 0; i < signature.length; i++) head[4 + i] = signature.charCodeAt(i);
  return [head, data];
}

/** `blob` (the page's encoded PNG or JPEG) with `meta`'s EXIF and ICC profile; `blob` itself when there are none. */
export async function withMetadata(blob, meta) {
  if (!meta || (!meta.exif && !meta.icc)) return blob;
  const b = new Uint8Array(await blob.arrayBuffer()), extra = [];
  if (blob.type === 'image/png') {
    if (meta.icc) {
      const z = await deflate(meta.icc), name = 'ICC Profile';
      const data = new Uint8Array(name.length + 2 + z.length);
      for (let i = 0; i < name.length; i++) data[i] = name.charCodeAt(i);
      data.set(z, name.length + 2);  // NUL, then compression method 0
      extra.push(pngChunk('iCCP', data));
    }
    if (meta.exif) extra.push(pngChunk('eXIf', meta.exif));
    const ihdrEnd = 8 + 12 + u32be(b, 8);
    return new Blob([b.subarray(0, ihdrEnd), ...extra, b.subarray(ihdrEnd)], {type: blob.type});
  }
  let at = 2;  // after SOI, and after a JFIF APP0 the encoder wrote
  if (b[2] === 0xff && b[3] === 0xe0) at = 4 + u16be(b, 4);
  if (meta.exif && meta.exif.length <= 65527) extra.push(...jpegSegment(0xe1, EXIF_SIG, meta.exif));  // one segment at most
  if (meta.icc) {
    const size = 65519, count = Math.ceil(meta.icc.length / size);  // a segment holds 65535 bytes with its header
    for (let k = 0; k < count; k++) {
      extra.push(...jpegSegment(0xe2, ICC_SIG + String.fromCharCode(k + 1, count), meta.icc.subarray(k * size, (k + 1) * size)));
    }
  }
  return new Blob([b.subarray(0, at), ...extra, b.subarray(at)], {type: blob.type});
}
