// intake console: fills the server-rendered shells with data from the admin API.
// The admin token lives in this tab's sessionStorage only and goes out as a bearer token to this
// origin's /api/v1. Data is written with textContent, never parsed as HTML, so nothing it holds can
// run as markup.
(function () {
  'use strict';

  var TOKEN_KEY = 'intake.adminToken';
  var body = document.body;
  var page = body.dataset.page;
  var pageID = body.dataset.id || '';
  var temporalUI = body.dataset.temporalUi || '';
  var namespace = body.dataset.namespace || 'default';

  // Stop ends a page's work quietly (we are leaving for the sign-in page).
  function Stop() {}

  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

  function here() { return location.pathname + location.search; }

  function toLogin(reason) {
    var q = new URLSearchParams({ next: here() });
    if (reason) { q.set('reason', reason); }
    location.replace('/console/login?' + q.toString());
  }

  function signOut(reason) {
    sessionStorage.removeItem(TOKEN_KEY);
    toLogin(reason);
  }

  // api calls the admin API; a refused token sends the operator back to the sign-in page.
  async function api(method, path, payload) {
    var headers = { 'Authorization': 'Bearer ' + token(), 'Accept': 'application/json' };
    var init = { method: method, headers: headers, cache: 'no-store', credentials: 'omit' };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = typeof payload === 'string' ? payload : JSON.stringify(payload);
    }
    var resp = await fetch(path, init);
    if (resp.status === 401) {
      signOut('refused');
      throw new Stop();
    }
    var text = await resp.text();
    var data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (e) { data = null; }
    }
    if (!resp.ok) {
      var err = new Error((data && data.message) || ('the admin API answered HTTP ' + resp.status));
      err.status = resp.status;
      err.data = data;
      throw err;
    }
    return { data: data, next: resp.headers.get('X-Next-Cursor') || '' };
  }

  // h builds an element; strings become text nodes, never markup.
  function h(tag, props) {
    var e = document.createElement(tag);
    if (props) {
      Object.keys(props).forEach(function (k) {
        var v = props[k];
        if (v === null || v === undefined || v === false) { return; }
        if (k === 'class') { e.className = v; } else if (k === 'text') { e.textContent = v; } else { e.setAttribute(k, v); }
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var kid = arguments[i];
      if (kid === null || kid === undefined) { continue; }
      e.append(kid instanceof Node ? kid : String(kid));
    }
    return e;
  }

  function $(sel) { return document.querySelector(sel); }

  function link(href, text) { return h('a', { href: href }, text); }

  // safeURL keeps http(s) links only (a link the API gives is never javascript:).
  function safeURL(u) { return /^https?:\/\//i.test(u || '') ? u : ''; }

  function state(s) { return h('span', { class: 'state state-' + String(s || 'unknown') }, s || 'unknown'); }

  function time(s) {
    if (!s) { return ''; }
    return String(s).replace('T', ' ').replace(/\.\d+/, '').replace('Z', '');
  }

  function workflowURL(workflowID, runID) {
    var base = safeURL(temporalUI);
    if (!base || !workflowID) { return ''; }
    var u = base.replace(/\/+$/, '') + '/namespaces/' + encodeURIComponent(namespace) + '/workflows/' + encodeURIComponent(workflowID);
    return runID ? u + '/' + encodeURIComponent(runID) + '/history' : u;
  }

  function workflowLink(workflowID, runID, url) {
    var u = safeURL(url) || workflowURL(workflowID, runID);
    return u ? h('a', { href: u, target: '_blank', rel: 'noopener noreferrer' }, workflowID) : h('code', null, workflowID);
  }

  function deliveryHref(id) { return '/console/deliveries/' + encodeURIComponent(id); }

  function row(tbody, cells) {
    var tr = h('tr');
    cells.forEach(function (c) {
      var td;
      if (c && typeof c === 'object' && !(c instanceof Node)) {
        td = h('td', { class: c.cls || null }, c.v);
      } else {
        td = h('td', null, c);
      }
      tr.append(td);
    });
    tbody.append(tr);
    return tr;
  }

  function num(n) { return { v: String(n), cls: 'num' }; }

  function fill(table, items, cells) {
    var tbody = $(table + ' tbody');
    tbody.replaceChildren();
    items.forEach(function (it) { row(tbody, cells(it)); });
    var empty = document.querySelector('.empty[data-for="' + table.slice(1) + '"]');
    if (empty) { empty.hidden = items.length > 0; }
  }

  function facts(dl, pairs) {
    var el = $(dl);
    el.replaceChildren();
    pairs.forEach(function (p) {
      if (p[1] === null || p[1] === undefined || p[1] === '') { return; }
      el.append(h('dt', null, p[0]), h('dd', null, p[1]));
    });
  }

  function showError(err) {
    if (err instanceof Stop) { return; }
    var e = $('#error');
    e.textContent = err && err.message ? err.message : String(err);
    e.hidden = false;
  }

  function clearError() { $('#error').hidden = true; }

  function pretty(v) { return JSON.stringify(v, null, 2); }

  // Filters: the page's query string fills the form and becomes the API's query.
  function fillForm(form, q) {
    var f = $(form);
    if (!f) { return; }
    Array.prototype.forEach.call(f.elements, function (el) {
      if (el.name && q.has(el.name)) { el.value = q.get(el.name); }
    });
  }

  // A datetime-local value is read as UTC (every time in the console is).
  function rfc3339(v) {
    if (!v) { return ''; }
    if (/Z$|[+-]\d\d:\d\d$/.test(v)) { return v; }
    return (v.length === 16 ? v + ':00' : v) + 'Z';
  }

  function apiQuery(q, names) {
    var out = new URLSearchParams();
    names.forEach(function (n) {
      var v = q.get(n);
      if (!v) { return; }
      out.set(n, n === 'from' || n === 'to' ? rfc3339(v) : v);
    });
    return out;
  }

  function pager(q, next) {
    var first = $('#first-page'), more = $('#next-page');
    if (q.has('cursor')) {
      var f = new URLSearchParams(q);
      f.delete('cursor');
      first.href = '?' + f.toString();
      first.hidden = false;
    }
    if (next) {
      var n = new URLSearchParams(q);
      n.set('cursor', next);
      more.href = '?' + n.toString();
      more.hidden = false;
    }
  }

  function plural(n, one, many) { return n + ' ' + (n === 1 ? one : many); }

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  // ---- pages ----

  async function login() {
    var q = new URLSearchParams(location.search);
    var status = $('#login-status');
    if (q.get('reason') === 'refused') { status.textContent = 'The admin API refused the token: sign in again.'; }
    $('#login').addEventListener('submit', async function (ev) {
      ev.preventDefault();
      var t = $('#token').value.trim();
      status.textContent = 'Checking the token…';
      var resp = await fetch('/api/v1/integrations?limit=1', { headers: { 'Authorization': 'Bearer ' + t }, cache: 'no-store', credentials: 'omit' });
      if (resp.status !== 200) {
        status.textContent = resp.status === 401 ? 'Token refused by the admin API.' : 'The admin API answered HTTP ' + resp.status + '.';
        return;
      }
      sessionStorage.setItem(TOKEN_KEY, t);
      var next = q.get('next') || '';
      // Only a console page of this origin: never an open redirect.
      location.replace(/^\/console\/(?!\/)/.test(next) ? next : '/console/');
    });
  }

  var OUTCOMES = ['accepted', 'succeeded', 'filtered', 'failed'];

  async function overview() {
    async function load() {
      var to = new Date(), from = new Date(to.getTime() - 3600 * 1000);
      var q = new URLSearchParams({ from: from.toISOString(), to: to.toISOString() });
      var ans = (await api('GET', '/api/v1/deliveries/counts?' + q.toString())).data;
      $('#window').textContent = 'from ' + time(ans.from) + ' to ' + time(ans.to) + ' UTC';
      var byIntegration = {};
      var other = {};
      ans.counts.forEach(function (c) {
        var r = byIntegration[c.integration] || (byIntegration[c.integration] = {});
        r[c.status] = (r[c.status] || 0) + c.count;
        if (OUTCOMES.indexOf(c.status) < 0) { other[c.status] = true; }
      });
      var names = Object.keys(byIntegration).sort();
      var totals = {};
      function cell(name, status, n) {
        if (!n) { return num(0); }
        var dq = new URLSearchParams({ integration: name, from: ans.from.slice(0, 19), to: ans.to.slice(0, 19) });
        if (status) { dq.set('status', status); }
        return { v: link('/console/deliveries?' + dq.toString(), String(n)), cls: 'num' };
      }
      fill('#counts', names, function (name) {
        var r = byIntegration[name], total = 0;
        var cells = [link('/console/deliveries?' + new URLSearchParams({ integration: name }).toString(), name)];
        OUTCOMES.forEach(function (s) {
          total += r[s] || 0;
          totals[s] = (totals[s] || 0) + (r[s] || 0);
          cells.push(cell(name, s, r[s] || 0));
        });
        Object.keys(other).forEach(function (s) { total += r[s] || 0; });
        totals.all = (totals.all || 0) + total;
        cells.push(cell(name, '', total));
        return cells;
      });
      var foot = $('#counts tfoot');
      foot.replaceChildren();
      if (names.length) {
        var cells = ['All integrations'];
        OUTCOMES.forEach(function (s) { cells.push(num(totals[s] || 0)); });
        cells.push(num(totals.all || 0));
        row(foot, cells);
      }
    }
    $('#refresh').addEventListener('click', function () { load().then(clearError, showError); });
    await load();
    setInterval(function () { load().then(clearError, showError); }, 15000);
  }

  async function integrationIDs() {
    var list = $('#integration-ids');
    if (!list) { return; }
    var ans = await api('GET', '/api/v1/integrations?limit=1000');
    ans.data.forEach(function (i) { list.append(h('option', { value: i.identifier })); });
  }

  function failure(e) { return e ? e.type + ': ' + e.message : ''; }

  async function deliveries() {
    var q = new URLSearchParams(location.search);
    fillForm('#filters', q);
    integrationIDs().catch(showError);
    var ans = await api('GET', '/api/v1/deliveries?' + apiQuery(q, ['integration', 'status', 'origin', 'from', 'to', 'limit', 'cursor']).toString());
    fill('#deliveries', ans.data, function (d) {
      return [time(d.received_at), link(deliveryHref(d.id), d.id), d.integration, d.origin, state(d.status), failure(d.error),
        num((d.entities || []).length), num((d.replays || []).length)];
    });
    pager(q, ans.next);

    var start = $('#bulk-start'), box = $('#bulk-confirm-box');
    start.addEventListener('click', function () { box.hidden = false; start.disabled = true; });
    $('#bulk-abort').addEventListener('click', function () { box.hidden = true; start.disabled = false; });
    $('#bulk-confirm').addEventListener('click', async function () {
      var filter = {};
      ['integration', 'status', 'origin', 'from', 'to'].forEach(function (n) {
        var v = q.get(n);
        if (v) { filter[n] = n === 'from' || n === 'to' ? rfc3339(v) : v; }
      });
      try {
        var started = (await api('POST', '/api/v1/deliveries/replay', filter)).data;
        location.assign('/console/replays/' + encodeURIComponent(started.replay_id) + '?' + new URLSearchParams({ run: started.run_id }).toString());
      } catch (e) { showError(e); }
    });
  }

  async function delivery() {
    var id = pageID;
    var auditQ = new URLSearchParams({ delivery_id: id });
    $('#audit-link').href = '/console/audit?' + auditQ.toString();

    async function load() {
      var d = (await api('GET', '/api/v1/deliveries/' + encodeURIComponent(id))).data;
      facts('#summary', [
        ['Status', state(d.status)],
        ['Error', failure(d.error)],
        ['Integration', link('/console/integrations/' + encodeURIComponent(d.integration), d.integration)],
        ['Origin', d.origin],
        ['Received (UTC)', time(d.received_at)],
        ['Updated (UTC)', time(d.updated_at)],
        ['Delivery key', d.delivery_key],
        ['Content type', d.content_type],
        ['Workflow', d.workflow_id ? h('span', null, workflowLink(d.workflow_id, d.run_id, d.workflow_url), safeURL(d.workflow_url) || workflowURL(d.workflow_id, d.run_id) ? ' (Temporal UI)' : '') : ''],
        ['Run', d.run_id]
      ]);
      fill('#entities', d.entities || [], function (e) {
        return [num(e.mapping), e.template, e.identifier || '', e.operation, state(e.outcome), e.error_type || '', e.message || ''];
      });
      fill('#mappings', d.mappings || [], function (m) {
        return [num(m.index), m.template, m.filtered ? 'filtered out' : 'passed'];
      });
      fill('#replays', d.replays || [], function (r) { return [workflowLink(r.workflow_id, r.run_id), state(r.status)]; });
      $('#body-encoding').textContent = '(' + d.body_encoding + ')';
      $('#body').textContent = d.body_encoding === 'json' ? pretty(d.body) : String(d.body);
      var hs = Object.keys(d.headers || {}).sort();
      fill('#headers', hs, function (k) { return [k, d.headers[k]]; });
      var audit = (await api('GET', '/api/v1/audit_logs?' + new URLSearchParams({ delivery_id: id, limit: '100' }).toString())).data;
      fill('#audit', audit, function (a) {
        return [time(a.trigger.at), a.trigger.origin, a.action, state(a.status), a.context.entity_template + '/' + a.context.entity, a.message || ''];
      });
      return d;
    }
    await load();

    var button = $('#replay'), status = $('#replay-status');
    button.addEventListener('click', async function () {
      button.disabled = true;
      try {
        var started = (await api('POST', '/api/v1/deliveries/' + encodeURIComponent(id) + '/replay')).data;
        status.textContent = 'Replay started (' + started.workflow_id + '), waiting for its outcome…';
        for (var i = 0; i < 240; i++) {
          await sleep(500);
          var d = await load();
          var run = (d.replays || []).filter(function (r) { return r.workflow_id === started.workflow_id; })[0];
          if (run) {
            status.replaceChildren('Replay finished: ', state(run.status));
            return;
          }
        }
        status.textContent = 'The replay is still running; reload the page later.';
      } catch (e) { showError(e); } finally { button.disabled = false; }
    });
  }

  async function replay() {
    var q = new URLSearchParams(location.search);
    var cancel = $('#cancel'), note = $('#cancel-status');
    cancel.addEventListener('click', async function () {
      cancel.disabled = true;
      try {
        await api('POST', '/api/v1/replays/' + encodeURIComponent(pageID) + '/cancel');
        note.textContent = 'Cancel requested: it stops after the running batch.';
      } catch (e) { showError(e); cancel.disabled = false; }
    });
    for (;;) {
      var r = (await api('GET', '/api/v1/replays/' + encodeURIComponent(pageID))).data;
      var p = r.progress || {};
      facts('#progress', [
        ['Status', state(r.status)],
        ['Replayed so far', String(p.started || 0)],
        ['Succeeded', String(p.succeeded || 0)],
        ['Failed', String(p.failed || 0)],
        ['Done', p.done ? 'yes' : 'no'],
        ['Workflow', workflowLink(r.replay_id, q.get('run') || '')]
      ]);
      var running = r.status === 'Running';
      cancel.hidden = !running;
      if (!running) { return; }
      await sleep(1000);
    }
  }

  async function audit() {
    var q = new URLSearchParams(location.search);
    fillForm('#filters', q);
    var names = ['integration', 'entity_template', 'delivery_id', 'origin', 'action', 'status', 'from', 'to', 'limit', 'cursor'];
    var ans = await api('GET', '/api/v1/audit_logs?' + apiQuery(q, names).toString());
    fill('#audit', ans.data, function (a) {
      return [time(a.trigger.at), a.trigger.by.integration_id || '', a.trigger.origin, a.action, state(a.status),
        a.context.entity_template + '/' + a.context.entity, a.message || '', a.delivery_id ? link(deliveryHref(a.delivery_id), a.delivery_id) : ''];
    });
    pager(q, ans.next);
  }

  async function integrations() {
    var q = new URLSearchParams(location.search);
    var ans = await api('GET', '/api/v1/integrations?' + apiQuery(q, ['limit', 'cursor']).toString());
    fill('#integrations', ans.data, function (i) {
      var tpls = [];
      (i.mappings || []).forEach(function (m) { if (tpls.indexOf(m.template) < 0) { tpls.push(m.template); } });
      var enc = encodeURIComponent(i.identifier);
      var kind = i.source && i.source.kind ? i.source.kind : ((i.mappings || []).some(function (m) { return m.topic; }) ? 'kafka' : 'webhook');
      var sec = i.security ? (i.security.scheme || 'auto') : (i.allow_unsigned ? 'none (unsigned)' : 'none');
      return [link('/console/integrations/' + enc, i.identifier), i.title || '', kind, sec, i.enabled === false ? 'no' : 'yes', tpls.join(', '),
        h('span', null, link('/console/deliveries?integration=' + enc, 'deliveries'), ' · ', link('/console/playground?integration=' + enc, 'playground'))];
    });
    pager(q, ans.next);
  }

  async function templates() {
    var q = new URLSearchParams(location.search);
    var ans = await api('GET', '/api/v1/templates?' + apiQuery(q, ['limit', 'cursor']).toString());
    fill('#templates', ans.data, function (t) {
      return [link('/console/templates/' + encodeURIComponent(t.identifier), t.identifier), t.title || '',
        Object.keys((t.schema && t.schema.properties) || {}).sort().join(', '), Object.keys(t.relations || {}).sort().join(', ')];
    });
    pager(q, ans.next);
  }

  async function documentPage(kind) {
    var enc = encodeURIComponent(pageID);
    var doc = (await api('GET', '/api/v1/' + kind + '/' + enc)).data;
    $('#document').textContent = pretty(doc);
    var links = $('#links');
    if (kind === 'integrations') {
      links.append(link('/console/deliveries?integration=' + enc, 'Its deliveries'), ' · ',
        link('/console/playground?integration=' + enc, 'Try it in the playground'), ' · ', link('/console/audit?integration=' + enc, 'Its audit entries'));
    } else {
      links.append(link('/console/audit?entity_template=' + enc, 'Audit entries of its entities'));
    }
  }

  // parseHeaders reads "Name: value" lines.
  function parseHeaders(text) {
    var out = {};
    text.split('\n').forEach(function (line, i) {
      if (!line.trim()) { return; }
      var at = line.indexOf(':');
      if (at < 1) { throw new Error('headers line ' + (i + 1) + ' is not "Name: value"'); }
      out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    });
    return out;
  }

  async function playground() {
    var q = new URLSearchParams(location.search);
    var sel = $('#pg-integration'), unsaved = $('#pg-unsaved'), def = $('#pg-definition');
    var bodyIn = $('#pg-body'), headersIn = $('#pg-headers'), pathIn = $('#pg-path');
    var stateEl = $('#pg-state'), verdict = $('#pg-verdict'), problem = $('#pg-problem');
    var ids = (await api('GET', '/api/v1/integrations?limit=1000')).data;
    ids.forEach(function (i) { sel.append(h('option', { value: i.identifier }, i.identifier + (i.title ? ' — ' + i.title : ''))); });
    if (q.get('integration')) { sel.value = q.get('integration'); }
    unsaved.hidden = sel.value !== '';

    var seq = 0, timer = null;
    function say(text, isProblem) {
      problem.textContent = isProblem ? text : '';
      problem.hidden = !isProblem;
    }
    function clearResult() {
      verdict.replaceChildren();
      $('#pg-mappings tbody').replaceChildren();
      $('#pg-entities tbody').replaceChildren();
      $('#pg-answer').textContent = '';
    }
    async function run() {
      var mine = ++seq;
      clearError();
      var payloadText = bodyIn.value.trim();
      if (!payloadText) { stateEl.textContent = 'waiting for a payload'; clearResult(); say('', false); return; }
      var request;
      try {
        JSON.parse(payloadText);
        var hdrs = parseHeaders(headersIn.value);
        // The payload goes as typed (numbers keep their digits).
        request = '{"body":' + payloadText + ',"headers":' + JSON.stringify(hdrs);
        if (pathIn.value.trim()) { request += ',"path":' + JSON.stringify(pathIn.value.trim()); }
        var url = '/api/v1/integrations/' + encodeURIComponent(sel.value) + '/test';
        if (!sel.value) {
          var d = def.value.trim();
          if (!d) { throw new Error('pick an integration or paste one'); }
          JSON.parse(d);
          request += ',"integration":' + d;
          url = '/api/v1/integrations/test';
        }
        request += '}';
      } catch (e) {
        stateEl.textContent = 'not sent';
        clearResult();
        verdict.replaceChildren('Invalid input: ', state('failed'));
        say(e.message.indexOf('JSON') >= 0 ? 'Not valid JSON: ' + e.message : e.message, true);
        return;
      }
      stateEl.textContent = 'running…';
      var ans;
      try {
        ans = (await api('POST', url, request)).data;
      } catch (e) {
        if (mine !== seq || e instanceof Stop) { return; }
        stateEl.textContent = 'refused';
        clearResult();
        verdict.replaceChildren('Refused by the API: ', state('failed'));
        var details = e.data && e.data.details && Array.isArray(e.data.details) ? e.data.details.map(function (x) { return x.field + ': ' + x.message; }).join('; ') : '';
        say(e.message + (details ? ' (' + details + ')' : ''), true);
        return;
      }
      if (mine !== seq) { return; } // a newer run is on its way
      stateEl.textContent = 'done';
      var failed = (ans.entities || []).filter(function (x) { return x.outcome === 'failed'; }).length;
      verdict.replaceChildren(ans.valid ? 'Valid: every entity would be written ' : 'Not valid: ', state(ans.valid ? 'succeeded' : 'failed'),
        ' (' + plural((ans.entities || []).length, 'entity', 'entities') + ', ' + failed + ' failing)');
      say(ans.error ? failure(ans.error) : '', !!ans.error);
      fill('#pg-mappings', ans.mappings || [], function (m) { return [num(m.index), m.template, m.filtered ? 'filtered out' : 'passed']; });
      fill('#pg-entities', ans.entities || [], function (x) {
        return [x.template, x.identifier || '', state(x.outcome), x.error_type || '', x.message || ''];
      });
      $('#pg-answer').textContent = pretty(ans);
    }
    function soon() {
      clearTimeout(timer);
      stateEl.textContent = 'typing…';
      timer = setTimeout(function () { run().catch(showError); }, 300);
    }
    [bodyIn, headersIn, pathIn, def].forEach(function (el) { el.addEventListener('input', soon); });
    sel.addEventListener('change', function () { unsaved.hidden = sel.value !== ''; soon(); });
  }

  var pagesByName = {
    login: login,
    overview: overview,
    deliveries: deliveries,
    delivery: delivery,
    replay: replay,
    audit: audit,
    integrations: integrations,
    integration: function () { return documentPage('integrations'); },
    templates: templates,
    template: function () { return documentPage('templates'); },
    playground: playground
  };

  var so = document.getElementById('signout');
  if (so) { so.addEventListener('click', function () { sessionStorage.removeItem(TOKEN_KEY); location.assign('/console/login'); }); }
  if (page !== 'login' && page !== 'not_found' && !token()) {
    toLogin('');
    return;
  }
  var fn = pagesByName[page];
  if (fn) {
    Promise.resolve().then(fn).then(function () { body.dataset.loaded = 'true'; }, function (e) { showError(e); body.dataset.loaded = 'error'; });
  }
}());
