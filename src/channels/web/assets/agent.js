// The agent desk. Signed in by an HttpOnly session cookie; every change sends the
// session's CSRF token, which lives only in this page's memory.
'use strict';
(function () {
  const { el, api, errorText, clear, mmss } = window.kefu;
  const $ = (id) => document.getElementById(id);
  const TITLE = document.title;
  let csrf = null;
  let current = null;          // the open chat's id
  let fetchedAt = 0;           // when the queue was read (ms)
  let unread = new Map();      // chat id -> customer messages not yet seen
  let events = null;

  function showSignin(msg) {
    $('desk').hidden = true; $('signout').hidden = true; $('who').textContent = '';
    $('signin').hidden = false; $('signin-error').textContent = msg || '';
    if (events) { events.close(); events = null; }
    $('token').focus();
  }

  function signedIn(body) {
    csrf = body.csrf;
    $('who').textContent = body.agent.name + '（' + body.agent.id + '）';
    $('signin').hidden = true; $('desk').hidden = false; $('signout').hidden = false;
    refreshQueue();
    listen();
  }

  async function call(method, path, body) {
    const r = await api(method, path, body, csrf);
    if (r.status === 401) showSignin('登录已失效，请重新登录');
    return r;
  }

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = await api('POST', '/v1/agent/session', { token: $('token').value });
    $('token').value = '';
    if (r.status === 200) signedIn(r.body); else $('signin-error').textContent = '令牌无效';
  });
  $('signout').addEventListener('click', async () => {
    await api('DELETE', '/v1/agent/session', undefined, csrf);
    csrf = null; current = null;
    showSignin('');
  });

  // --- queue -----------------------------------------------------------------
  let queue = { queued: [], mine: [] };
  async function refreshQueue() {
    const r = await call('GET', '/v1/agent/queue');
    if (r.status !== 200) return;
    queue = r.body; fetchedAt = Date.now();
    drawQueue();
  }

  function waited(t) { return t.waited_secs + (Date.now() - fetchedAt) / 1000; }

  function drawQueue() {
    const selected = new Set(Array.from(document.querySelectorAll('#queue input:checked'), (c) => c.value));
    clear($('queue'));
    $('queue-count').textContent = '(' + queue.queued.length + ')';
    for (const t of queue.queued) {
      const id = 'pick-' + t.ticket;
      const box = el('input', { type: 'checkbox', id, value: t.ticket, checked: selected.has(String(t.ticket)) });
      const label = el('label', { for: id, class: 'grow' }, '#' + t.ticket + ' ' + t.customer,
        el('span', { class: 'meta wait', 'data-ticket': t.ticket, text: '等待 ' + mmss(waited(t)) }),
        el('span', { class: 'meta', text: (t.intent || '') + (t.group ? ' · ' + t.group : '') + (t.left_message ? ' · 留言' : '') }));
      const b = el('button', { type: 'button', class: 'secondary', 'aria-label': '接入会话 ' + t.ticket, text: '接入' });
      b.addEventListener('click', () => claim([t.ticket]));
      $('queue').append(el('li', {}, box, label, b));
    }
    if (!queue.queued.length) $('queue').append(el('li', { class: 'muted', text: '暂无排队客户' }));
    clear($('mine'));
    for (const t of queue.mine) {
      const n = unread.get(t.ticket) || 0;
      const b = el('button', { type: 'button', class: 'secondary grow', 'aria-label': '打开会话 ' + t.ticket + (n ? '，' + n + ' 条新消息' : '') },
        '#' + t.ticket + ' ' + t.customer);
      b.addEventListener('click', () => open(t.ticket));
      const li = el('li', { class: t.ticket === current ? 'current' : '' }, b);
      if (n) li.append(el('span', { class: 'unread', text: String(n) }));
      $('mine').append(li);
    }
    if (!queue.mine.length) $('mine').append(el('li', { class: 'muted', text: '暂无会话' }));
    updateTitle();
  }

  setInterval(() => {
    for (const span of document.querySelectorAll('#queue .wait')) {
      const t = queue.queued.find((q) => String(q.ticket) === span.dataset.ticket);
      if (t) span.textContent = '等待 ' + mmss(waited(t));
    }
  }, 1000);

  async function claim(ids) {
    $('queue-error').textContent = '';
    let last = null;
    for (const id of ids) {
      const r = await call('POST', '/v1/agent/claim', id === null ? {} : { ticket: id });
      if (r.status === 200) last = r.body.ticket;
      else $('queue-error').textContent = '#' + (id === null ? '' : id) + ' ' + errorText(r);
    }
    await refreshQueue();
    if (last !== null) open(last);
  }
  $('claim-selected').addEventListener('click', () => {
    const ids = Array.from(document.querySelectorAll('#queue input:checked'), (c) => Number(c.value));
    if (ids.length) claim(ids); else $('queue-error').textContent = '请先勾选要接入的会话';
  });
  $('claim-next').addEventListener('click', () => claim([null]));

  // --- one chat --------------------------------------------------------------
  async function open(id) {
    current = id;
    if (!document.hidden) unread.delete(id);
    const r = await call('GET', '/v1/agent/chats/' + id);
    if (r.status !== 200) { $('chat-error').textContent = errorText(r); return; }
    const c = r.body;
    $('no-chat').hidden = true; $('chat').hidden = false; $('chat-error').textContent = '';
    $('chat-h').textContent = '会话 #' + c.ticket + (c.state === 'claimed' ? '' : '（' + c.state + '）');
    $('chat-customer').textContent = c.customer + ' · ' + c.tenant;
    $('chat-intent').textContent = c.intent || '—';
    $('chat-reason').textContent = c.reason || '—';
    clear($('chat-candidates'));
    for (const q of c.candidates) $('chat-candidates').append(el('li', { text: q }));
    if (!c.candidates.length) $('chat-candidates').append(el('li', { class: 'muted', text: '无' }));
    const names = { customer: '客户', bot: '机器人', agent: '客服' };
    clear($('transcript'));
    for (const l of c.transcript.concat(c.messages)) {
      $('transcript').append(el('li', { class: 'msg ' + l.from },
        el('span', { class: 'who', text: names[l.from] || l.from }), el('span', { class: 'text', text: l.text })));
    }
    $('transcript').scrollTop = $('transcript').scrollHeight;
    drawQueue();
  }

  $('reply-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    if (current === null) return;
    const text = $('reply').value.trim();
    if (!text) return;
    const r = await call('POST', '/v1/agent/chats/' + current + '/reply', { text });
    if (r.status === 200) { $('reply').value = ''; open(current); } else $('chat-error').textContent = errorText(r);
  });
  $('release').addEventListener('click', async () => {
    if (current === null) return;
    const r = await call('POST', '/v1/agent/chats/' + current + '/release', {});
    if (r.status === 200) { closeView(); refreshQueue(); } else $('chat-error').textContent = errorText(r);
  });
  $('close-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    if (current === null) return;
    const summary = $('summary').value.trim();
    const r = await call('POST', '/v1/agent/chats/' + current + '/close', summary ? { summary } : {});
    if (r.status === 200) { $('summary').value = ''; closeView(); refreshQueue(); } else $('chat-error').textContent = errorText(r);
  });
  function closeView() { current = null; $('chat').hidden = true; $('no-chat').hidden = false; $('chat-h').textContent = '会话'; }

  // --- knowledge base --------------------------------------------------------
  $('search-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const q = $('search').value.trim();
    if (!q) return;
    const r = await call('GET', '/v1/agent/search?q=' + encodeURIComponent(q));
    clear($('hits'));
    if (r.status !== 200) { $('hits').append(el('li', { class: 'error', text: errorText(r) })); return; }
    for (const h of r.body) {
      const b = el('button', { type: 'button', class: 'secondary', 'aria-label': '插入答案：' + h.question, text: '插入回复' });
      b.addEventListener('click', () => {
        const box = $('reply');
        box.value = box.value ? box.value + '\n' + h.answer : h.answer;
        box.focus();
      });
      $('hits').append(el('li', { class: 'hit' }, el('strong', { text: h.question }), el('span', { class: 'answer', text: h.answer }), b));
    }
    if (!r.body.length) $('hits').append(el('li', { class: 'muted', text: '没有找到' }));
  });

  // --- live events and notices -----------------------------------------------
  function updateTitle() {
    let n = 0;
    for (const v of unread.values()) n += v;
    document.title = (n ? '(' + n + ') ' : '') + TITLE;
  }

  let audio = null;
  function beep() {
    try {
      audio = audio || new AudioContext();
      const o = audio.createOscillator(), g = audio.createGain();
      o.frequency.value = 880; g.gain.value = 0.05;
      o.connect(g); g.connect(audio.destination);
      o.start(); o.stop(audio.currentTime + 0.15);
    } catch (_) { /* no audio: the title badge remains */ }
  }

  function listen() {
    if (events) events.close();
    events = new EventSource('/v1/agent/events');
    events.onmessage = null;
    const onEvent = (e) => {
      let ev = {};
      try { ev = JSON.parse(e.data); } catch (_) { /* resync */ }
      if (e.type === 'customer_message' && queue.mine.some((t) => t.ticket === ev.ticket)) {
        // Seen only when it is the open chat of a visible desk; otherwise a badge
        // (title and list) and a tone.
        if (ev.ticket !== current || document.hidden) {
          unread.set(ev.ticket, (unread.get(ev.ticket) || 0) + 1);
          beep();
        }
        if (ev.ticket === current) open(current);
      }
      if (e.type === 'chat_queued') beep();
      refreshQueue();
    };
    for (const name of ['chat_queued', 'customer_message', 'chat_cancelled', 'chat_claimed', 'chat_released', 'chat_closed', 'chat_timed_out', 'resync']) {
      events.addEventListener(name, onEvent);
    }
    events.addEventListener('open', refreshQueue);
  }
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && current !== null) { unread.delete(current); drawQueue(); }
  });

  (async () => {
    const r = await api('GET', '/v1/agent/session');
    if (r.status === 200) signedIn(r.body); else showSignin('');
  })();
})();
