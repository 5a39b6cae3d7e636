#!/usr/bin/env node
// Checks that the btfs API refuses requests that a web page of another origin makes a
// browser send (CSRF) and requests reaching it under a foreign host name (DNS rebinding):
//
//   node crossorigin.mjs <api-base, e.g. http://127.0.0.1:5001>
//
// It serves a page of its own on 127.0.0.1:<random port> and loads it in Debian's
// headless Chromium (playwright-core). That page
//   1. fetch()es POST <api>/api/v1/bittorrent/jobs/ls: the fetch must fail, and the
//      response the browser saw (if any) must be a 403, not a 200 hidden by CORS;
//   2. fetch()es POST <api>/api/v1/bittorrent/download?arg=<magnet>&detach=true with
//      mode 'no-cors' (the response is opaque: only its side effect matters);
//   3. submits <form method=post action=<api>/api/v1/bittorrent/download?arg=…>: the
//      navigation must get HTTP 403.
// Then a page of origin http://evil.example:<api port> (Chromium maps evil.example to
// 127.0.0.1 through --host-resolver-rules) makes a same-origin POST …/jobs/ls, as a page
// whose DNS name was re-bound to 127.0.0.1 would: 403 (if the browser itself blocks
// that request, the same request is made from node with that Host).
// Directly with node's fetch: a POST carrying Origin: http://127.0.0.1:<that port> gets
// 403, and so does one with `Origin: null`. Before and after, a POST …/jobs/ls without
// Origin gets 200, and no job with the probe's infohash may exist afterwards.
//
// Success: one JSON line {"ok":true,…} on stdout. Failure: the reasons on stderr, exit
// status 1. The browser and the server are always closed; a hard timeout ends the run.
import { chromium } from 'playwright-core'
import { createServer, request } from 'node:http'
import { randomBytes } from 'node:crypto'
import { launchOptions } from './chromium.mjs'

const HARD_TIMEOUT_MS = 90_000
const REBIND_HOST = 'evil.example'
// DNS rebinding without DNS: the name resolves to the API's own address.
const LAUNCH = launchOptions([`--host-resolver-rules=MAP ${REBIND_HOST} 127.0.0.1`])

setTimeout(() => {
  console.error(`crossorigin.mjs: still running after ${HARD_TIMEOUT_MS / 1000} s; giving up`)
  process.exit(1)
}, HARD_TIMEOUT_MS).unref()

const problems = []
const expect = (cond, msg) => {
  if (!cond) problems.push(msg)
}

// The daemon's API token (the second argument): node's own requests carry it, as the
// CLI's do; the hostile pages do not know it.
let TOKEN = ''

// A bodyless POST with exactly these extra headers (node:http, so Host can be set too).
function post(url, headers = {}) {
  return new Promise((resolve, reject) => {
    const auth = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {}
    const req = request(url, { method: 'POST', headers: { 'Content-Length': 0, ...auth, ...headers }, timeout: 15_000 }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error(`POST ${url}: no answer within 15 s`)))
    req.on('error', reject)
    req.end()
  })
}

async function jobsWith(api, infohash) {
  const r = await post(`${api}/api/v1/bittorrent/jobs/ls`)
  if (r.status !== 200) return { status: r.status, body: r.body }
  const list = JSON.parse(r.body).Jobs || []
  return {
    status: 200,
    matching: list.filter((j) => `${j.Source || ''} ${j.InfoHash || ''}`.toLowerCase().includes(infohash)).length,
  }
}

function page(api, magnet) {
  const download = `${api}/api/v1/bittorrent/download?arg=${encodeURIComponent(magnet)}&detach=true`
  const attr = (s) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;')
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>another origin</title><link rel="icon" href="data:,"></head>
<body>
<h1>a page of another origin</h1>
<form id="csrf" method="post" action="${attr(download)}"><input type="hidden" name="x" value="y"></form>
<script>
const API = ${JSON.stringify(api)};
const DOWNLOAD = ${JSON.stringify(download)};
window.readJobs = async () => {
  try {
    const r = await fetch(API + '/api/v1/bittorrent/jobs/ls', { method: 'POST' });
    return { fetched: true, status: r.status, body: (await r.text()).slice(0, 200) };
  } catch (e) {
    return { fetched: false, error: String(e) };
  }
};
window.blindDownload = async () => {
  try {
    const r = await fetch(DOWNLOAD, { method: 'POST', mode: 'no-cors' });
    return { fetched: true, type: r.type, status: r.status };
  } catch (e) {
    return { fetched: false, error: String(e) };
  }
};
</script>
</body></html>`
}

async function main() {
  const base = process.argv[2]
  TOKEN = process.argv[3] || ''
  if (!base || process.argv.length > 4) throw new Error('usage: node crossorigin.mjs <api-base, e.g. http://127.0.0.1:5001> [token]')
  const api = new URL(base).origin
  const apiPort = new URL(api).port || '80'
  const infohash = randomBytes(20).toString('hex')
  const magnet = `magnet:?xt=urn:btih:${infohash}&dn=crossorigin-probe`
  const report = { api }

  // The API answers a request without Origin (as the CLI sends them).
  const before = await jobsWith(api, infohash)
  if (before.status !== 200) throw new Error(`POST ${api}/api/v1/bittorrent/jobs/ls without Origin: HTTP ${before.status} ${before.body}`)

  const html = page(api, magnet)
  const server = createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' })
    res.end(html)
  })
  await new Promise((ok, bad) => server.once('error', bad).listen(0, '127.0.0.1', ok))
  const pagePort = server.address().port
  const pageOrigin = `http://127.0.0.1:${pagePort}`
  report.page = pageOrigin

  let browser
  try {
    browser = await chromium.launch(LAUNCH)
    const context = await browser.newContext()
    const tab = await context.newPage()
    // What reached the API and what it answered, as the browser saw it (CORS or not).
    const seen = []
    tab.on('response', (r) => {
      if (r.url().startsWith(api + '/')) seen.push({ method: r.request().method(), url: r.url(), status: r.status() })
    })
    tab.on('requestfailed', (r) => {
      if (r.url().startsWith(api + '/')) seen.push({ method: r.method(), url: r.url(), failed: r.failure()?.errorText })
    })
    const home = await tab.goto(pageOrigin + '/', { timeout: 20_000 })
    if (!home || !home.ok()) throw new Error(`the test page at ${pageOrigin} did not load`)

    // 1. A readable cross-origin fetch.
    report.fetch = await tab.evaluate(() => window.readJobs())
    expect(!report.fetch.fetched, `a page of ${pageOrigin} read ${api}/api/v1/bittorrent/jobs/ls: ${JSON.stringify(report.fetch)}`)
    await tab.waitForTimeout(200)
    const lsSeen = seen.filter((s) => s.url.includes('/jobs/ls'))
    report.fetchSeen = lsSeen
    expect(
      !lsSeen.some((s) => s.status && s.status !== 403),
      `the cross-origin POST jobs/ls was answered ${JSON.stringify(lsSeen)}, not 403 (CORS hid it from the page, but the API did not refuse)`,
    )

    // 2. A blind (no-cors) POST that would start a download.
    report.noCors = await tab.evaluate(() => window.blindDownload())
    await tab.waitForTimeout(200)
    report.noCorsSeen = seen.filter((s) => s.url.includes('/download?') && s.method === 'POST')
    expect(
      !report.noCorsSeen.some((s) => s.status && s.status !== 403),
      `the no-cors POST download was answered ${JSON.stringify(report.noCorsSeen)}, not 403`,
    )

    // 3. A form submission: a top-level navigation, whose status Chromium reports.
    const [nav] = await Promise.all([
      tab.waitForResponse((r) => r.url().startsWith(`${api}/api/v1/bittorrent/download`) && r.request().method() === 'POST', { timeout: 20_000 }),
      tab.evaluate(() => document.getElementById('csrf').submit()),
    ])
    report.form = { status: nav.status() }
    const origin = await nav.request().headerValue('origin')
    report.form.origin = origin
    expect(nav.status() === 403, `the cross-origin form POST got HTTP ${nav.status()}, not 403`)

    // 4. DNS rebinding: a page whose origin is http://evil.example:<api port> makes a
    //    same-origin POST, whose Host header is evil.example:<port>. The page is what the
    //    API itself answers for that name (its refusal is a page too), so the browser
    //    holds it as a page of 127.0.0.1; only if that shows no page of that origin does
    //    the browser make one up (route.fulfill), as the attacker's server would have
    //    served it before the name was rebound.
    const rebound = `http://${REBIND_HOST}:${apiPort}`
    const evil = await context.newPage()
    await evil.goto(`${rebound}/dashboard/`, { timeout: 20_000 }).catch(() => null)
    const landed = await evil.evaluate(() => location.origin).catch(() => null)
    if (landed !== rebound) {
      await evil.route(`${rebound}/`, (route) =>
        route.fulfill({ status: 200, contentType: 'text/html', body: '<!DOCTYPE html><title>rebound</title><link rel="icon" href="data:,">' }),
      )
      await evil.goto(`${rebound}/`, { timeout: 20_000 })
      await evil.unroute(`${rebound}/`)
    }
    report.rebinding = await evil.evaluate(async () => {
      try {
        const r = await fetch('/api/v1/bittorrent/jobs/ls', { method: 'POST' })
        return { origin: location.origin, fetched: true, status: r.status, body: (await r.text()).slice(0, 200) }
      } catch (e) {
        return { origin: location.origin, fetched: false, error: String(e) }
      }
    })
    // A browser that blocks the request itself (Local Network Access) proves nothing
    // about the API, so then the same request is made without a browser.
    if (!report.rebinding.fetched) {
      const r = await post(`${api}/api/v1/bittorrent/jobs/ls`, { Host: `${REBIND_HOST}:${apiPort}` }).catch((e) => ({ error: String(e) }))
      report.rebinding.direct = r.status ?? r.error
    }
    const rebindStatus = report.rebinding.fetched ? report.rebinding.status : report.rebinding.direct
    expect(rebindStatus === 403, `a request for Host ${REBIND_HOST}:${apiPort} got ${JSON.stringify(report.rebinding)}, not 403`)
  } finally {
    if (browser) await browser.close().catch(() => {})
    server.close()
  }

  // Directly: a foreign Origin, and the opaque origin "null", are refused.
  const direct = await post(`${api}/api/v1/bittorrent/jobs/ls`, { Origin: pageOrigin })
  report.directOrigin = direct.status
  expect(direct.status === 403, `POST jobs/ls with Origin: ${pageOrigin} got HTTP ${direct.status}, not 403`)
  if (direct.status === 403) {
    let msg = null
    try {
      msg = JSON.parse(direct.body).Message
    } catch (_) {
      /* checked below */
    }
    expect(typeof msg === 'string' && msg.length > 0, `the 403 has no JSON error body with a Message: ${direct.body.slice(0, 200)}`)
  }
  const nul = await post(`${api}/api/v1/bittorrent/download?arg=${encodeURIComponent(magnet)}&detach=true`, { Origin: 'null' })
  report.directNullOrigin = nul.status
  expect(nul.status === 403, `POST download with Origin: null got HTTP ${nul.status}, not 403`)

  // Nothing of the above started a download.
  const after = await jobsWith(api, infohash)
  report.after = after
  expect(after.status === 200, `POST jobs/ls without Origin afterwards: HTTP ${after.status}`)
  expect(after.matching === 0, `the refused requests still created ${after.matching} job(s) for the probe magnet`)

  if (problems.length) {
    console.error(`crossorigin.mjs: the API did not refuse everything:\n- ${problems.join('\n- ')}\n${JSON.stringify(report)}`)
    process.exit(1)
  }
  console.log(JSON.stringify({ ok: true, ...report }))
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`crossorigin.mjs: ${e && e.stack ? e.stack : e}`)
    process.exit(1)
  },
)
