#!/usr/bin/env node
// Drives the btfs dashboard in Debian's headless Chromium (playwright-core, no browser
// download) the way a person would:
//
//   node dashboard.mjs <dashboard-url> <magnet> <screenshot.png> [expected-sha256-hex]
//
// It pastes the magnet into #magnet-input, clicks #magnet-add, opens the job's detail
// view, waits (bounded) until the job's row shows `100%` and a gateway link, checks that
// the detail view showed at least one peer and a complete piece map, saves a full-page
// screenshot, then loads the gateway link's origin in a tab and fetches the link there,
// hashing the bytes (SHA-256) in the browser. For a single-file torrent that is the
// file itself, so with [expected-sha256-hex] the hash must match.
//
// Success: one JSON line on stdout,
//   {"ok":true,"cid":…,"sha256":…,"bytes":…,"screenshot":…,"job":…,"peers":[…],"pieces":…}
// Failure: the reason on stderr, exit status 1. The browser is always closed; a hard
// timeout ends the whole run.
import { chromium } from 'playwright-core'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { launchOptions } from './chromium.mjs'
import { resolve } from 'node:path'

const HARD_TIMEOUT_MS = 150_000
const DOWNLOAD_TIMEOUT_MS = 90_000
const LAUNCH = launchOptions()

setTimeout(() => {
  console.error(`dashboard.mjs: still running after ${HARD_TIMEOUT_MS / 1000} s; giving up`)
  process.exit(1)
}, HARD_TIMEOUT_MS).unref()

class Failure extends Error {}
const fail = (msg) => {
  throw new Failure(msg)
}

async function main() {
  const [url, magnet, shotArg, expected] = process.argv.slice(2)
  if (!url || !magnet || !shotArg || process.argv.length > 6) {
    fail('usage: node dashboard.mjs <dashboard-url> <magnet> <screenshot.png> [expected-sha256-hex]')
  }
  if (expected && !/^[0-9a-fA-F]{64}$/.test(expected)) fail(`not a SHA-256 in hex: ${expected}`)
  const screenshot = resolve(shotArg)

  const browser = await chromium.launch(LAUNCH)
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    const page = await context.newPage()
    const pageErrors = []
    page.on('pageerror', (e) => pageErrors.push(String(e && e.stack ? e.stack : e)))
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`)
    })
    const checkErrors = () => {
      // A failed resource load is logged as a console error too; only script errors count.
      const real = pageErrors.filter((e) => !e.startsWith('console: Failed to load resource'))
      if (real.length) fail(`the dashboard raised errors:\n${real.join('\n')}`)
    }

    const resp = await page.goto(url, { waitUntil: 'load', timeout: 30_000 })
    if (!resp || !resp.ok()) fail(`GET ${url}: HTTP ${resp ? resp.status() : 'no response'}`)
    for (const sel of ['#magnet-input', '#magnet-add', '#torrent-file', '#torrent-add', '#seed', '#jobs', '#served']) {
      if (!(await page.$(sel))) fail(`the dashboard has no ${sel}`)
    }

    // Jobs already listed (a daemon that ran before) are not the one added here.
    await page.waitForTimeout(1500)
    const before = await page.$$eval('#jobs tr.job[data-id]', (trs) => trs.map((tr) => tr.dataset.id))
    await page.fill('#magnet-input', magnet)
    await page.click('#magnet-add')
    // Either a new job row appears or the error area says why not.
    const first = await page.waitForFunction(
      (old) => {
        const err = document.querySelector('#error')
        if (err && !err.hidden && err.textContent.trim()) return { error: err.textContent.trim() }
        const row = [...document.querySelectorAll('#jobs tr.job[data-id]')].find((tr) => !old.includes(tr.dataset.id))
        return row ? { id: row.dataset.id } : null
      },
      before,
      { timeout: 30_000, polling: 100 },
    )
    const added = await first.jsonValue()
    if (added.error) fail(`adding the magnet failed: ${added.error}`)
    const id = added.id
    const row = `#jobs tr.job[data-id="${CSS_escape(id)}"]`

    // The detail view, opened while the download runs; peers seen there are recorded as
    // they come (a finished download may have let its peers go).
    await page.click(`${row} .name`)
    await page.waitForSelector(`#detail:not([hidden])[data-id="${CSS_escape(id)}"]`, { timeout: 10_000 })
    await page.evaluate(() => {
      const seen = (window.__btfsSeenPeers = new Map())
      const tbody = document.querySelector('#detail-peers tbody')
      const record = () => {
        for (const tr of tbody.querySelectorAll('tr.peer')) {
          const cells = tr.querySelectorAll('td')
          const addr = cells[0] ? cells[0].textContent : ''
          seen.set(addr, cells[1] ? cells[1].textContent : '')
        }
      }
      new MutationObserver(record).observe(tbody, { childList: true, subtree: true, characterData: true })
      record()
    })

    const done = await page
      .waitForFunction(
        (sel) => {
          const tr = document.querySelector(sel)
          if (!tr) return { gone: true }
          const state = tr.querySelector('.state')?.textContent.trim()
          if (state === 'failed' || state === 'cancelled') {
            return { state, error: tr.querySelector('.job-error')?.textContent.trim() || '' }
          }
          const pct = tr.querySelector('.progress')?.textContent.trim()
          const a = tr.querySelector('a.gateway-link')
          if (pct === '100%' && a) return { state, cid: a.textContent.trim(), href: a.href }
          return null
        },
        row,
        { timeout: DOWNLOAD_TIMEOUT_MS, polling: 200 },
      )
      .then((h) => h.jsonValue())
      .catch(async (e) => {
        const text = await page.$eval(row, (tr) => tr.innerText).catch(() => '(no row)')
        fail(`no 100% with a gateway link within ${DOWNLOAD_TIMEOUT_MS / 1000} s (${e.message.split('\n')[0]}); the row shows: ${text}`)
      })
    if (done.gone) fail('the job row disappeared')
    if (!done.cid) fail(`the job ended ${done.state}: ${done.error}`)
    checkErrors()

    // The piece map in the detail view: every piece verified (its events come ~1 s apart).
    const pieces = await page
      .waitForFunction(
        () => {
          const c = document.querySelector('#detail:not([hidden]) #piece-map')
          if (!c || !c.offsetWidth || !c.offsetHeight) return null
          const n = Number(c.dataset.pieces)
          return n > 0 && Number(c.dataset.have) === n ? n : null
        },
        null,
        { timeout: 15_000, polling: 200 },
      )
      .then((h) => h.jsonValue())
      .catch(async () => {
        const m = await page.$eval('#piece-map', (c) => `${c.dataset.have} of ${c.dataset.pieces}`).catch(() => 'none')
        fail(`the detail view shows no complete piece map (pieces: ${m})`)
      })
    const peers = await page.evaluate(() =>
      [...window.__btfsSeenPeers].map(([addr, client]) => ({ addr, client })),
    )
    if (!peers.length) fail('the detail view never listed a peer while the job ran')

    await page.screenshot({ path: screenshot, fullPage: true })
    const png = readFileSync(screenshot)
    if (png.length < 1000 || png.readUInt32BE(0) !== 0x89504e47) fail(`${screenshot} is not a PNG`)

    // The gateway link: its origin in a tab of its own, then the link fetched there
    // (a same-origin fetch, so the bytes are readable) and hashed in the browser.
    const href = done.href
    if (!/^https?:\/\//.test(href)) fail(`the gateway link is not http(s): ${href}`)
    const gw = await context.newPage()
    const home = await gw.goto(new URL(href).origin + '/', { timeout: 30_000 })
    if (!home) fail(`the gateway at ${new URL(href).origin} did not answer`)
    const got = await gw.evaluate(async (u) => {
      const r = await fetch(u, { cache: 'no-store' })
      const buf = await r.arrayBuffer()
      let sha = null
      if (crypto.subtle) {
        sha = [...new Uint8Array(await crypto.subtle.digest('SHA-256', buf))]
          .map((b) => b.toString(16).padStart(2, '0'))
          .join('')
      }
      let b64 = null
      if (!sha) {
        let bin = ''
        const bytes = new Uint8Array(buf)
        for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
        b64 = btoa(bin)
      }
      return { status: r.status, type: r.headers.get('content-type'), length: buf.byteLength, sha, b64 }
    }, href)
    if (got.status !== 200) fail(`GET ${href} in the browser: HTTP ${got.status}`)
    const sha256 = got.sha || createHash('sha256').update(Buffer.from(got.b64, 'base64')).digest('hex')
    if (expected && sha256 !== expected.toLowerCase()) {
      fail(`the gateway link's ${got.length} bytes have SHA-256 ${sha256}, expected ${expected.toLowerCase()}`)
    }
    checkErrors()

    console.log(
      JSON.stringify({
        ok: true,
        cid: done.cid,
        sha256,
        bytes: got.length,
        screenshot,
        job: id,
        state: done.state,
        gateway: href,
        peers,
        pieces,
      }),
    )
  } finally {
    await browser.close().catch(() => {})
  }
}

// CSS.escape is a browser API; job ids are hex, but quote anything else safely.
function CSS_escape(s) {
  return String(s).replace(/["\\]/g, '\\$&')
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`dashboard.mjs: ${e instanceof Failure ? e.message : e && e.stack ? e.stack : e}`)
    process.exit(1)
  },
)
