// The btfs dashboard: jobs of the daemon's BitTorrent client, live over Server-Sent
// Events, and the torrents it serves. Plain JS, no dependencies. Every string from the
// API goes into the DOM through textContent, attribute setters or input values, never
// through innerHTML; links are only made of http(s) URLs.
'use strict';
(() => {
  const API = '/api/v1/';
  const $ = (id) => document.getElementById(id);

  // `#token=XYZ`: sent as a bearer token on fetches and as ?token= on event streams.
  // Decoded with decodeURIComponent, so a literal `+` stays a `+`.
  const token = (() => {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (!m) return '';
    try {
      return decodeURIComponent(m[1]);
    } catch (_) {
      return m[1];
    }
  })();

  const ACTIVE = new Set(['queued', 'starting', 'metadata', 'checking', 'downloading', 'seeding']);
  const FINAL = new Set(['completed', 'failed', 'cancelled']);

  const jobs = new Map(); // Id -> Job
  const rows = new Map(); // Id -> {tr, cells}
  let gatewayBase = null; // e.g. http://127.0.0.1:8080, from /version or a job's GatewayUrl
  let detailId = null;
  let lastDetail = null;

  // ---- formatting -------------------------------------------------------------------

  const num = (x) => (typeof x === 'number' && Number.isFinite(x) ? x : 0);
  const str = (x) => (x === null || x === undefined ? '' : String(x));

  function size(n) {
    if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i++;
    }
    if (i === 0) return `${Math.round(n)} B`;
    return `${n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)} ${units[i]}`;
  }

  const rate = (r) => (num(r) > 0 ? `${size(num(r))}/s` : '—');

  function duration(s) {
    if (typeof s !== 'number' || !Number.isFinite(s) || s < 0) return '—';
    s = Math.round(s);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
    if (s < 100 * 86400) return `${Math.floor(s / 86400)}d ${Math.floor(s / 3600) % 24}h`;
    return '∞';
  }

  // Whole percent, rounded down: 100% only once everything is verified.
  function percent(job) {
    const p = num(job.Progress);
    if (p >= 1 || (num(job.Size) > 0 && num(job.Have) >= num(job.Size))) return 100;
    return Math.max(0, Math.min(99, Math.floor(p * 100)));
  }

  function timeAgo(unix) {
    if (typeof unix !== 'number' || !Number.isFinite(unix) || unix <= 0) return 'never';
    const d = Date.now() / 1000 - unix;
    const when = new Date(unix * 1000).toLocaleTimeString();
    if (d < 0) return when;
    return `${when} (${duration(d)} ago)`;
  }

  // A job's label while its name is unknown: the magnet's dn, else the source itself.
  function label(job) {
    if (job.Name) return { text: str(job.Name), known: true };
    const src = str(job.Source);
    if (src.startsWith('magnet:')) {
      try {
        const dn = new URLSearchParams(src.slice(src.indexOf('?') + 1)).get('dn');
        if (dn) return { text: dn, known: false };
      } catch (_) {
        /* fall through */
      }
    }
    return { text: src || str(job.Id), known: false };
  }

  // ---- DOM helpers ------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') e.className = v;
        else if (k === 'text') e.textContent = v;
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function setText(e, t) {
    t = str(t);
    if (e.textContent !== t) e.textContent = t;
  }

  // An http(s) URL, or null: nothing else becomes an href.
  function httpUrl(u) {
    if (typeof u !== 'string' || !u) return null;
    try {
      const x = new URL(u, location.href);
      return x.protocol === 'http:' || x.protocol === 'https:' ? x.href : null;
    } catch (_) {
      return null;
    }
  }

  function link(href, text, cls) {
    const url = httpUrl(href);
    if (!url) return el('span', { class: `${cls || ''} cid`.trim(), text });
    return el('a', { class: cls, href: url, target: '_blank', rel: 'noopener noreferrer', text });
  }

  function cidUrl(cid, filename) {
    if (!gatewayBase || !cid) return null;
    let u = `${gatewayBase}/btfs/${encodeURIComponent(cid)}`;
    if (filename) u += `?filename=${encodeURIComponent(filename)}`;
    return u;
  }

  function learnGateway(u) {
    if (gatewayBase) return;
    const url = httpUrl(u);
    if (url) gatewayBase = new URL(url).origin;
  }

  // ---- API --------------------------------------------------------------------------

  function query(params) {
    const parts = [];
    for (const [k, v] of Object.entries(params || {})) {
      if (v === undefined || v === null || v === false) continue;
      parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(v === true ? 'true' : String(v))}`);
    }
    return parts.length ? `?${parts.join('&')}` : '';
  }

  async function api(cmd, params, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(API + cmd + query(params), {
        method: 'POST',
        headers,
        body,
        cache: 'no-store',
        credentials: 'same-origin',
      });
    } catch (e) {
      throw new Error(`cannot reach the btfs daemon (${e.message})`);
    }
    const text = await res.text();
    if (!res.ok) {
      let msg = text.trim();
      try {
        const j = JSON.parse(text);
        if (j && typeof j.Message === 'string') msg = j.Message;
      } catch (_) {
        /* not JSON: the text itself */
      }
      msg = msg || `HTTP ${res.status} ${res.statusText}`;
      if (res.status === 401) {
        msg += token
          ? ' (the token in this page\'s #token= was refused)'
          : ' (this daemon wants a token: open the dashboard as /dashboard/#token=…)';
      }
      throw new Error(msg);
    }
    return text;
  }

  async function apiJson(cmd, params, body) {
    const text = await api(cmd, params, body);
    return text.trim() ? JSON.parse(text) : null;
  }

  function eventsUrl() {
    const p = {};
    if (detailId) p.arg = detailId;
    if (token) p.token = token;
    return `${API}bittorrent/jobs/events${query(p)}`;
  }

  // ---- errors -----------------------------------------------------------------------

  function showError(msg) {
    const e = $('error');
    setText(e, msg);
    e.hidden = false;
  }

  function clearError() {
    const e = $('error');
    e.hidden = true;
    e.textContent = '';
  }

  $('error').addEventListener('click', clearError);

  // ---- adding jobs ------------------------------------------------------------------

  async function busy(button, f) {
    button.disabled = true;
    try {
      await f();
    } catch (e) {
      showError(e.message);
    } finally {
      button.disabled = false;
    }
  }

  $('magnet-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const magnet = $('magnet-input').value.trim();
    if (!magnet) {
      showError('Paste a magnet link first.');
      return;
    }
    busy($('magnet-add'), async () => {
      const job = await apiJson('bittorrent/download', {
        arg: magnet,
        detach: true,
        seed: $('seed').checked,
      });
      clearError();
      $('magnet-input').value = '';
      if (job && job.Id) upsert(job);
    });
  });

  $('torrent-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const file = $('torrent-file').files[0];
    if (!file) {
      showError('Choose a .torrent file first.');
      return;
    }
    busy($('torrent-add'), async () => {
      const form = new FormData();
      form.append('file', file, file.name);
      const job = await apiJson(
        'bittorrent/download',
        { detach: true, seed: $('seed').checked },
        form,
      );
      clearError();
      $('torrent-file').value = '';
      if (job && job.Id) upsert(job);
    });
  });

  // ---- the jobs table ---------------------------------------------------------------

  function makeRow(id) {
    const c = {};
    const tr = el('tr', { class: 'job', 'data-id': id });
    c.name = el('button', { type: 'button', class: 'name linkish' });
    c.name.addEventListener('click', () => openDetail(id));
    c.err = el('div', { class: 'job-error', hidden: true });
    c.size = el('td', { class: 'num' });
    c.bar = el('div', { class: 'bar' });
    c.pct = el('span', { class: 'pct' });
    c.progress = el('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100 }, c.bar, c.pct);
    c.down = el('td', { class: 'num' });
    c.up = el('td', { class: 'num' });
    c.peers = el('td', { class: 'num' });
    c.seeds = el('td', { class: 'num' });
    c.eta = el('td', { class: 'num' });
    c.state = el('span', { class: 'state' });
    c.cid = el('td', { class: 'cid-cell' });
    c.pause = el('button', { type: 'button', class: 'small' });
    c.pause.addEventListener('click', () => pauseResume(id));
    c.cancel = el('button', { type: 'button', class: 'small', text: 'Cancel' });
    c.cancel.addEventListener('click', () => cancel(id));
    c.rm = el('button', { type: 'button', class: 'small danger', text: 'Remove' });
    c.rm.addEventListener('click', () => remove(id));
    tr.append(
      el('td', { class: 'c-name' }, c.name, c.err),
      c.size,
      el('td', { class: 'c-progress' }, c.progress),
      c.down,
      c.up,
      c.peers,
      c.seeds,
      c.eta,
      el('td', null, c.state),
      c.cid,
      el('td', { class: 'c-actions' }, c.pause, c.cancel, c.rm),
    );
    const row = { tr, c, cid: null, href: null };
    rows.set(id, row);
    return row;
  }

  function updateRow(row, job) {
    const { c } = row;
    const l = label(job);
    setText(c.name, l.text);
    c.name.classList.toggle('unknown', !l.known);
    c.name.title = l.known ? `${l.text}: details` : str(job.Source);
    const error = str(job.Error);
    setText(c.err, error);
    c.err.hidden = !error;
    setText(c.size, num(job.Size) > 0 ? size(num(job.Size)) : '—');
    c.size.title = `${size(num(job.Have))} of ${size(num(job.Size))} verified`;
    const pct = percent(job);
    c.bar.style.width = `${pct}%`;
    setText(c.pct, `${pct}%`);
    c.progress.setAttribute('aria-valuenow', pct);
    c.progress.classList.toggle('done', pct === 100);
    setText(c.down, rate(job.DownloadRate));
    setText(c.up, rate(job.UploadRate));
    setText(c.peers, num(job.Peers));
    setText(c.seeds, num(job.Seeds));
    setText(c.eta, ACTIVE.has(job.State) && job.State !== 'seeding' ? duration(job.Eta) : '—');
    const state = str(job.State);
    setText(c.state, state);
    c.state.className = `state state-${state.replace(/[^a-z]/g, '')}`;
    c.state.title = error;

    const cid = job.Cid ? str(job.Cid) : null;
    const href = httpUrl(job.GatewayUrl);
    if (cid !== row.cid || href !== row.href) {
      row.cid = cid;
      row.href = href;
      const a = cid ? link(href, cid, 'gateway-link') : null;
      if (a) a.title = href ? `${cid} on the gateway` : cid;
      c.cid.replaceChildren(...(a ? [a] : []));
    }

    // Resume a paused job; a failed or cancelled one can be started again too.
    const active = ACTIVE.has(state);
    const again = state === 'failed' || state === 'cancelled';
    c.pause.hidden = !(active || again || state === 'paused');
    setText(c.pause, active ? 'Pause' : again ? 'Retry' : 'Resume');
    c.cancel.hidden = FINAL.has(state);
  }

  function upsert(job) {
    const id = str(job.Id);
    jobs.set(id, job);
    learnGateway(job.GatewayUrl);
    const row = rows.get(id) || makeRow(id);
    updateRow(row, job);
    placeRows();
  }

  // Newest first; DOM nodes move only when the order changes.
  function placeRows() {
    const tbody = $('jobs').tBodies[0];
    const order = [...jobs.values()].sort(
      (a, b) => num(b.Created) - num(a.Created) || str(a.Id).localeCompare(str(b.Id)),
    );
    order.forEach((job, i) => {
      const tr = rows.get(str(job.Id)).tr;
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    $('jobs-empty').hidden = jobs.size > 0;
  }

  function renderJobs(list) {
    if (!Array.isArray(list)) return;
    const seen = new Set();
    for (const job of list) {
      if (!job || job.Id === undefined) continue;
      seen.add(str(job.Id));
      upsert(job);
    }
    for (const id of [...jobs.keys()]) {
      if (!seen.has(id)) forget(id);
    }
    placeRows();
  }

  function forget(id) {
    jobs.delete(id);
    const row = rows.get(id);
    if (row) row.tr.remove();
    rows.delete(id);
    if (detailId === id) closeDetail();
  }

  // ---- job actions ------------------------------------------------------------------

  async function act(f) {
    try {
      await f();
      clearError();
    } catch (e) {
      showError(e.message);
    }
  }

  function pauseResume(id) {
    const job = jobs.get(id);
    const cmd = job && ACTIVE.has(job.State) ? 'pause' : 'resume';
    act(async () => {
      const j = await apiJson(`bittorrent/jobs/${cmd}`, { arg: id });
      if (j && j.Id) upsert(j);
    });
  }

  function cancel(id) {
    const job = jobs.get(id);
    if (!window.confirm(`Cancel “${label(job || { Id: id }).text}”?`)) return;
    act(async () => {
      const j = await apiJson('bittorrent/jobs/cancel', { arg: id });
      if (j && j.Id) upsert(j);
    });
  }

  function remove(id) {
    const job = jobs.get(id);
    const dialog = $('rm-dialog');
    setText($('rm-name'), label(job || { Id: id }).text);
    $('rm-delete-data').checked = false;
    dialog.returnValue = '';
    dialog.onclose = () => {
      if (dialog.returnValue !== 'remove') return;
      const params = { arg: id };
      if ($('rm-delete-data').checked) params['delete-data'] = true;
      act(async () => {
        await apiJson('bittorrent/jobs/rm', params);
        forget(id);
      });
    };
    if (typeof dialog.showModal === 'function') {
      dialog.showModal();
    } else if (window.confirm(`Remove “${label(job || { Id: id }).text}”? (the data is kept)`)) {
      dialog.returnValue = 'remove';
      dialog.onclose();
    }
  }

  // ---- detail view ------------------------------------------------------------------

  function openDetail(id) {
    detailId = id;
    lastDetail = null;
    const d = $('detail');
    d.hidden = false;
    d.dataset.id = id;
    const job = jobs.get(id);
    setText($('detail-name'), label(job || { Id: id }).text);
    for (const t of ['detail-files', 'detail-peers', 'detail-trackers']) $(t).tBodies[0].replaceChildren();
    $('detail-summary').replaceChildren();
    apiJson('bittorrent/jobs/show', { arg: id })
      .then((detail) => {
        if (detail && detailId === id) renderDetail(detail);
      })
      .catch((e) => showError(e.message));
    connect(); // the stream with ?arg=ID also carries `detail` events
    d.scrollIntoView({ block: 'nearest' });
  }

  function closeDetail() {
    if (detailId === null) return;
    detailId = null;
    lastDetail = null;
    $('detail').hidden = true;
    delete $('detail').dataset.id;
    connect();
  }

  $('detail-close').addEventListener('click', closeDetail);
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !$('rm-dialog').open) closeDetail();
  });

  function summaryItem(term, value) {
    return [el('dt', { text: term }), el('dd', null, value)];
  }

  // One part per mapping: "TCP 6881 → 10.200.2.1:6881 via UPnP", "UDP 7000 failed: …".
  function portMapping(pm) {
    const maps = pm && Array.isArray(pm.Mappings) ? pm.Mappings : [];
    if (!maps.length) return 'off';
    return maps
      .map((m) => {
        const head = `${str(m.Protocol)} ${num(m.InternalPort)}`;
        const ext = pm.ExternalIp ? `${str(pm.ExternalIp)}:${num(m.ExternalPort)}` : `port ${num(m.ExternalPort)}`;
        const via = m.Method ? ` via ${str(m.Method)}` : '';
        switch (m.State) {
          case 'Mapped': return `${head} → ${ext}${via}`;
          case 'Failed': return `${head} failed${via}: ${str(m.Error)}`;
          case 'Removed': return `${head} removed`;
          default: return `${head} mapping…`;
        }
      })
      .join(' · ');
  }

  function renderDetail(d) {
    lastDetail = d;
    learnGateway(d.GatewayUrl);
    setText($('detail-name'), label(d).text);
    const pct = percent(d);
    const items = [
      ['State', el('span', { class: `state state-${str(d.State).replace(/[^a-z]/g, '')}`, text: str(d.State) })],
      ['Progress', `${pct}% · ${num(d.PiecesHave)} of ${num(d.PiecesWanted)} pieces · ${size(num(d.Have))} of ${size(num(d.Size))}`],
      ['Rates', `↓ ${rate(d.DownloadRate)}  ↑ ${rate(d.UploadRate)}`],
      ['Transferred', `↓ ${size(num(d.Downloaded))}  ↑ ${size(num(d.Uploaded))}`],
      ['Peers', `${num(d.Peers)} (${num(d.Seeds)} seeds)`],
      ['ETA', duration(d.Eta)],
      ['Info hash', el('code', { text: d.InfoHash ? str(d.InfoHash) : '—' })],
      ['Root CID', d.Cid ? link(d.GatewayUrl, str(d.Cid), 'gateway-link') : '—'],
      ['Source', el('code', { class: 'wrap', text: str(d.Source) })],
      ['Seed after download', d.Seed ? 'yes' : 'no'],
    ];
    items.push(['Port mapping', portMapping(d.PortMapping)]);
    if (d.Created) items.push(['Added', new Date(num(d.Created) * 1000).toLocaleString()]);
    $('detail-summary').replaceChildren(...items.flatMap(([t, v]) => summaryItem(t, v)));
    const err = $('detail-error');
    setText(err, str(d.Error));
    err.hidden = !d.Error;

    drawPieces(d);

    const files = Array.isArray(d.Files) ? d.Files : [];
    $('detail-files').tBodies[0].replaceChildren(
      ...(files.length
        ? files.map((f) => {
            const path = str(f.Path);
            const base = path.split('/').pop();
            return el(
              'tr',
              { class: 'file' },
              el('td', { class: 'wrap', text: path }),
              el('td', { class: 'num', text: size(num(f.Length)) }),
              el('td', null, f.Cid ? link(cidUrl(str(f.Cid), base), str(f.Cid), 'cid-link') : el('span', { class: 'muted', text: '—' })),
            );
          })
        : [emptyRow(3, d.Name ? 'No files.' : 'Waiting for the metadata…')]),
    );

    const peers = Array.isArray(d.PeerList) ? d.PeerList : [];
    $('detail-peers').tBodies[0].replaceChildren(
      ...(peers.length
        ? peers.map((p) => {
            const flags = [
              p.Seed ? 'seed' : null,
              p.Outgoing ? 'out' : 'in',
              p.Choked ? 'choked' : 'unchoked',
              p.Interested ? 'interested' : null,
            ].filter(Boolean);
            return el(
              'tr',
              { class: 'peer' },
              el('td', null, el('code', { text: str(p.Addr) })),
              el('td', { class: 'client', text: p.Client ? str(p.Client) : '?' }),
              el('td', { class: 'num', text: rate(p.DownRate) }),
              el('td', { class: 'num', text: rate(p.UpRate) }),
              el('td', { class: 'num', text: `${Math.floor(num(p.Progress) * 100)}%` }),
              el('td', { class: 'muted', text: flags.join(' · ') }),
            );
          })
        : [emptyRow(6, 'No connected peers.')]),
    );

    const trackers = Array.isArray(d.Trackers) ? d.Trackers : [];
    $('detail-trackers').tBodies[0].replaceChildren(
      ...(trackers.length
        ? trackers.map((t) => {
            let result;
            if (t.Error) result = el('span', { class: 'bad', text: str(t.Error) });
            else if (t.LastAnnounce) {
              const parts = [`${num(t.Peers)} peers`];
              if (typeof t.Seeders === 'number') parts.push(`${t.Seeders} seeders`);
              if (typeof t.Leechers === 'number') parts.push(`${t.Leechers} leechers`);
              result = el('span', { text: parts.join(', ') });
            } else result = el('span', { class: 'muted', text: 'not announced yet' });
            return el(
              'tr',
              { class: 'tracker' },
              el('td', { class: 'num', text: num(t.Tier) }),
              el('td', { class: 'wrap' }, el('code', { text: str(t.Url) })),
              el('td', { text: timeAgo(t.LastAnnounce) }),
              el('td', null, result),
            );
          })
        : [emptyRow(4, 'No trackers.')]),
    );
  }

  function emptyRow(cols, text) {
    return el('tr', { class: 'empty' }, el('td', { colspan: cols, class: 'muted', text }));
  }

  // The piece map: one cell a piece, or a group of pieces a cell when there are many,
  // coloured by the share of verified pieces in it.
  function drawPieces(d) {
    const canvas = $('piece-map');
    const count = Math.max(0, Math.floor(num(d.PieceCount)));
    const hex = typeof d.PieceMap === 'string' ? d.PieceMap : '';
    const bytes = new Uint8Array(Math.ceil(count / 8));
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(i * 2, 2), 16) || 0;
    // No (or a short) bitfield while every piece is verified: all of them are there.
    const all = hex.length < bytes.length * 2 && count > 0 && num(d.PiecesHave) >= count;
    const has = all ? () => 1 : (i) => (bytes[i >> 3] >> (7 - (i & 7))) & 1;
    let have = 0;
    for (let i = 0; i < count; i++) have += has(i);

    const cssWidth = Math.max(100, canvas.clientWidth || 800);
    const cell = 10;
    const cols = Math.max(1, Math.floor(cssWidth / cell));
    const maxRows = 12;
    const per = Math.max(1, Math.ceil(count / (cols * maxRows)));
    const cells = Math.ceil(count / per);
    const nrows = Math.max(1, Math.ceil(cells / cols));
    const dpr = window.devicePixelRatio || 1;
    canvas.style.height = `${nrows * cell}px`;
    canvas.width = Math.round(cssWidth * dpr);
    canvas.height = Math.round(nrows * cell * dpr);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, cssWidth, nrows * cell);
    for (let k = 0; k < cells; k++) {
      const from = k * per;
      const to = Math.min(count, from + per);
      let n = 0;
      for (let i = from; i < to; i++) n += has(i);
      const f = n / (to - from);
      // grey (#d5dae1) to green (#2f9e5b)
      const mix = (a, b) => Math.round(a + (b - a) * f);
      ctx.fillStyle = f === 0 ? '#d5dae1' : `rgb(${mix(0xb9, 0x2f)},${mix(0xe4, 0x9e)},${mix(0xc6, 0x5b)})`;
      ctx.fillRect((k % cols) * cell, Math.floor(k / cols) * cell, cell - 1, cell - 1);
    }
    canvas.dataset.pieces = count;
    canvas.dataset.have = have;
    canvas.setAttribute('aria-label', `${have} of ${count} pieces verified`);
    setText(
      $('piece-legend'),
      count
        ? `${have} of ${count} verified${per > 1 ? ` · ${per} pieces a cell` : ''}`
        : '(unknown until the metadata arrives)',
    );
  }

  let resizeTimer = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => lastDetail && drawPieces(lastDetail), 150);
  });

  // ---- live updates -----------------------------------------------------------------

  let source = null;
  let retry = null;
  let lastEvent = 0;

  function setLive(on) {
    const l = $('live');
    l.classList.toggle('off', !on);
    setText(l, on ? 'live' : 'reconnecting…');
  }

  function connect() {
    if (source) source.close();
    clearTimeout(retry);
    const es = new EventSource(eventsUrl());
    source = es;
    es.addEventListener('open', () => setLive(true));
    es.addEventListener('jobs', (ev) => {
      lastEvent = Date.now();
      setLive(true);
      try {
        renderJobs(JSON.parse(ev.data).Jobs);
      } catch (e) {
        console.error('bad jobs event', e);
      }
    });
    es.addEventListener('detail', (ev) => {
      try {
        const d = JSON.parse(ev.data);
        if (d && detailId !== null && str(d.Id) === detailId) renderDetail(d);
      } catch (e) {
        console.error('bad detail event', e);
      }
    });
    es.addEventListener('error', () => {
      if (source !== es) return;
      setLive(false);
      if (es.readyState === EventSource.CLOSED) {
        // Refused (401, 403, 404…): say why through a plain request, then try again.
        refreshJobs();
        retry = setTimeout(connect, 5000);
      }
    });
  }

  async function refreshJobs() {
    try {
      const r = await apiJson('bittorrent/jobs/ls');
      if (r) renderJobs(r.Jobs);
    } catch (e) {
      showError(e.message);
    }
  }

  // A stream that went quiet (a proxy, a suspended laptop): start it again.
  setInterval(() => {
    if (source && source.readyState === EventSource.OPEN && lastEvent && Date.now() - lastEvent > 15000) {
      lastEvent = 0;
      setLive(false);
      connect();
    }
  }, 5000);

  // ---- served torrents --------------------------------------------------------------

  async function copy(text, button) {
    let ok = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        ok = true;
      } catch (_) {
        /* fall back */
      }
    }
    if (!ok) {
      const ta = el('textarea', { readonly: true, class: 'offscreen' });
      ta.value = text;
      document.body.append(ta);
      ta.select();
      try {
        ok = document.execCommand('copy');
      } catch (_) {
        ok = false;
      }
      ta.remove();
    }
    setText(button, ok ? 'Copied' : 'Copy failed');
    setTimeout(() => setText(button, 'Copy'), 1500);
  }

  function parseNdjson(text) {
    const t = text.trim();
    if (!t) return [];
    if (t.startsWith('[')) return JSON.parse(t);
    return t
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => JSON.parse(l));
  }

  let servedKey = '';

  async function loadServed() {
    const tbody = $('served').tBodies[0];
    let list;
    try {
      list = parseNdjson(await api('bittorrent/serve', { list: true }));
    } catch (e) {
      servedKey = '';
      tbody.replaceChildren(emptyRow(3, `Cannot list the served torrents: ${e.message}`));
      $('served-empty').hidden = true;
      return;
    }
    const key = JSON.stringify(list);
    if (key === servedKey) return; // unchanged: keep the rows (and a running "Copied")
    servedKey = key;
    tbody.replaceChildren(
      ...list.map((t) => {
        const magnet = str(t.Magnet);
        const input = el('input', { type: 'text', readonly: true, class: 'magnet', 'aria-label': 'Magnet link', spellcheck: 'false' });
        input.value = magnet;
        input.addEventListener('focus', () => input.select());
        const button = el('button', { type: 'button', class: 'small copy', text: 'Copy' });
        button.addEventListener('click', () => copy(magnet, button));
        const name = t.Cid
          ? link(cidUrl(str(t.Cid)), str(t.Name || t.Cid), 'cid-link')
          : el('span', { text: str(t.Name || t.Source) });
        return el(
          'tr',
          { class: 'served-torrent' },
          el('td', { class: 'wrap' }, name),
          el('td', null, el('code', { class: 'hash', text: str(t.InfoHash) })),
          el('td', { class: 'magnet-cell' }, input, button),
        );
      }),
    );
    $('served-empty').hidden = list.length > 0;
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) loadServed();
  });
  setInterval(() => {
    if (!document.hidden) loadServed();
  }, 10000);

  // ---- start ------------------------------------------------------------------------

  apiJson('version')
    .then((v) => {
      if (!v) return;
      setText($('version'), `v${str(v.Version)}`);
      const gw = httpUrl(v.Gateway);
      if (gw) gatewayBase = new URL(gw).origin;
    })
    .catch((e) => showError(e.message))
    .finally(loadServed);
  refreshJobs();
  connect();
})();
