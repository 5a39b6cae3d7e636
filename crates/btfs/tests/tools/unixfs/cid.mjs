#!/usr/bin/env node
// Independent reference for `btfs add`: prints the root CID that kubo's
//   ipfs add -r [--cid-version 0|1] [--raw-leaves[=false]] [--chunker size-N] [-w] [-H] PATH
// would print, computed with js ipfs-unixfs-importer (versions pinned in package-lock.json).
//
//   node cid.mjs [--cid-version 0|1] [--raw-leaves[=true|false]] [--chunk-size N]
//                [--wrap|-w] [--hidden|-H] PATH
//
// Output: one line, the root CID (base58btc for v0, base32 for v1). Errors go to stderr
// with exit status 2.
//
// kubo semantics copied here (the importer's own defaults differ: CIDv1, raw leaves):
// - CIDv0 by default; `--cid-version 1` turns raw leaves on unless `--raw-leaves=false`.
// - Raw leaves are always CIDv1 (codec raw), also under CIDv0; then a file of at most one
//   chunk (the empty file too) is that raw block itself.
// - Otherwise leaves are dag-pb nodes of UnixFS type "file" (leafType 'file'), fixed-size
//   chunks of 256 KiB, balanced layout with at most 174 links a node, and a file of one
//   chunk is that leaf itself (reduceSingleLeafToSelf).
// - Directories: dag-pb UnixFS "directory" nodes, links sorted by name bytes, empty
//   sub-directories kept, names starting with '.' skipped below PATH unless --hidden.
//   No mode/mtime is stored (kubo's default).
// - Links of a file node have an empty Name, encoded as a present zero-length field
//   (12 00), and Tsize = the child's block size plus its children's Tsizes; kubo encodes
//   them the same way (the 64 MiB anchor below depends on both).
//
// Directory sharding (HAMT): ipfs-unixfs-importer 17.1.1 defaults to
// shardSplitThresholdBytes = 262144 with shardSplitStrategy 'links-bytes': a directory
// becomes a HAMT when sum(utf8 name bytes + CID bytes) over its links is > 262144 (strictly
// greater). That is kubo/boxo's HAMTShardingSize = 256 KiB with HAMTSizeEstimation
// "links" (the default, "> not >=" since boxo's IPIP-499 work; older boxo used >=).
// It is set explicitly below. One difference remains: the importer counts a
// non-empty sub-directory as 0 bytes in that estimate (its CID is not known yet when it
// decides), while kubo counts name + CID bytes. When that changes the decision for
// some directory, this script refuses (exit 2) rather than print a CID kubo would not.
//
// Not supported (exit 2): symlinks, sockets, FIFOs, devices, names ending in '\'.

import { createReadStream, lstatSync, readdirSync } from 'node:fs'
import { basename, join, resolve } from 'node:path'
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

const SHARD_THRESHOLD = 262144
const MAX_LINKS = 174

function fail (msg) {
  process.stderr.write(`cid.mjs: ${msg}\n`)
  process.exit(2)
}

function parseArgs (argv) {
  const o = { cidVersion: 0, rawLeaves: undefined, chunkSize: 262144, wrap: false, hidden: false, path: undefined }
  const bool = (v, name) => {
    if (v === undefined || v === 'true') return true
    if (v === 'false') return false
    fail(`${name} takes true or false, not ${v}`)
  }
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i]
    let v
    const eq = a.indexOf('=')
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq) }
    const next = () => v ?? argv[++i] ?? fail(`${a} needs a value`)
    switch (a) {
      case '--cid-version': {
        const n = next()
        if (n !== '0' && n !== '1') fail(`unsupported CID version ${n}`)
        o.cidVersion = Number(n)
        break
      }
      case '--raw-leaves': o.rawLeaves = bool(v, a); break
      case '--chunk-size': o.chunkSize = Number(next()); break
      case '--chunker': {
        const m = /^size-(\d+)$/.exec(next())
        if (m == null) fail('only --chunker size-N is supported')
        o.chunkSize = Number(m[1])
        break
      }
      case '--wrap': case '-w': o.wrap = bool(v, a); break
      case '--hidden': case '-H': o.hidden = bool(v, a); break
      case '-r': case '--recursive': break // directories are always read recursively
      default:
        if (a.startsWith('-') && a !== '-') fail(`unknown option ${a}`)
        if (o.path !== undefined) fail('give exactly one PATH')
        o.path = argv[i]
    }
  }
  if (o.path === undefined) fail('usage: node cid.mjs [--cid-version 0|1] [--raw-leaves] [--chunk-size N] [--wrap] [--hidden] PATH')
  if (!Number.isSafeInteger(o.chunkSize) || o.chunkSize < 1) fail(`bad chunk size ${o.chunkSize}`)
  if (o.rawLeaves === undefined) o.rawLeaves = o.cidVersion === 1
  return o
}

const opts = parseArgs(process.argv.slice(2))
const utf8Len = (s) => Buffer.byteLength(s, 'utf8')
// Length in bytes of a child's binary CID: CIDv0 (sha2-256 multihash) is 34, CIDv1 36.
const cidLen = (isV1) => (isV1 ? 36 : 34)
const fileCidLen = (size) => cidLen(opts.cidVersion === 1 || (opts.rawLeaves && size <= opts.chunkSize))

// Walks PATH (lstat: symlinks are not followed) into importer candidates: every file,
// and every directory left empty after skipping hidden names. Also checks the sharding
// decision (see the header).
function walk (abs, rel, candidates) {
  const st = lstatSync(abs)
  if (rel.endsWith('\\')) fail(`${abs}: names ending in a backslash are not supported`)
  if (st.isFile()) {
    candidates.push({ path: rel, content: () => createReadStream(abs, { highWaterMark: 1 << 20 }) })
    return { dir: false, size: st.size }
  }
  if (!st.isDirectory()) fail(`${abs}: only regular files and directories are supported`)
  const names = readdirSync(abs).filter((n) => opts.hidden || !n.startsWith('.')).sort()
  if (names.length === 0) candidates.push({ path: rel })
  let kubo = 0 // boxo's estimate: every link
  let js = 0 // the importer's: non-empty sub-directories count 0
  for (const n of names) {
    const r = walk(join(abs, n), `${rel}/${n}`, candidates)
    const link = utf8Len(n) + (r.dir ? cidLen(opts.cidVersion === 1) : fileCidLen(r.size))
    kubo += link
    if (!r.dir || r.empty) js += link
  }
  if ((kubo > SHARD_THRESHOLD) !== (js > SHARD_THRESHOLD)) {
    fail(`${abs}: kubo's directory-sharding decision differs from ipfs-unixfs-importer's here (estimates ${kubo} and ${js} bytes, threshold ${SHARD_THRESHOLD})`)
  }
  return { dir: true, empty: names.length === 0 }
}

const abs = resolve(opts.path)
const name = basename(abs)
const candidates = []
walk(abs, name, candidates)
// Streams are opened lazily, one file at a time (see fileImportConcurrency below).
async function * source () {
  for (const c of candidates) yield c.content ? { path: c.path, content: c.content() } : c
}

// Only CIDs are wanted: a blockstore that keeps nothing.
const blockstore = { put: async (cid) => cid }

let root
for await (const entry of importer(source(), blockstore, {
  cidVersion: opts.cidVersion,
  rawLeaves: opts.rawLeaves,
  leafType: 'file',
  reduceSingleLeafToSelf: true,
  chunker: fixedSize({ chunkSize: opts.chunkSize }),
  layout: balanced({ maxChildrenPerNode: MAX_LINKS }),
  wrapWithDirectory: opts.wrap,
  shardSplitThresholdBytes: SHARD_THRESHOLD,
  shardSplitStrategy: 'links-bytes',
  fileImportConcurrency: 1,
  blockWriteConcurrency: 1
})) {
  if (entry.path === (opts.wrap ? '' : name)) root = entry.cid
}
if (root == null) fail('the importer produced no root')
process.stdout.write(`${root.toString()}\n`)
