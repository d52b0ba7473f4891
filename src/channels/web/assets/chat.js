// The customer chat. What the customer sees is kept in localStorage with the last
// agent-message sequence number, so a reload shows the same conversation and the
// live stream resumes after that number: nothing lost, nothing twice. Every message
// carries a message_id, so a resend after a dropped connection is answered once.
'use strict';
(function () {
  const { el, randomId, api, clear } = window.kefu;
  const KEY = 'kefu.chat.v1';
  const log = document.getElementById('log');
  const status = document.getElementById('status');
  const form = document.getElementById('composer');
  const input = document.getElementById('text');

  let s = null;
  try { s = JSON.parse(localStorage.getItem(KEY) || 'null'); } catch (_) { s = null; }
  if (!s || typeof s.user !== 'string') {
    s = { user: 'web-' + randomId(), items: [], seq: 0, ticket: null, state: null, agent: null, pending: [] };
  }
  function save() {
    if (s.items.length > 300) s.items = s.items.slice(-300);
    try { localStorage.setItem(KEY, JSON.stringify(s)); } catch (_) { /* private mode */ }
  }

  function setStatus(text) {
    status.textContent = text || '';
    status.hidden = !text;
  }

  // Appends one bubble (the log is never redrawn as a whole, so a screen reader
  // announces only what is new).
  function add(item) {
    s.items.push(item);
    save();
    const greeting = log.querySelector('.greeting');
    if (greeting) greeting.remove();
    log.append(bubble(item, s.items.length - 1));
    log.scrollTop = log.scrollHeight;
    showState();
  }

  function bubble(item, index) {
    const names = { me: '我', bot: '智能客服', agent: item.agent || '人工客服' };
    const li = el('li', { class: 'msg ' + item.from + (index < 0 ? ' greeting' : ''), 'data-index': index });
    if (item.from !== 'system' && item.from !== 'me') li.append(el('span', { class: 'who', text: names[item.from] }));
    li.append(el('span', { class: 'text', text: item.text }));
    if (item.options && item.options.length) {
      const box = el('div', { class: 'options', role: 'group', 'aria-label': item.optionsTitle || '选项' });
      if (item.optionsTitle) box.append(el('span', { class: 'title', text: item.optionsTitle }));
      for (const o of item.options) {
        const b = el('button', { type: 'button', class: 'option', 'data-number': o.number, text: o.number + '. ' + o.label });
        b.addEventListener('click', () => { send(String(o.number), o.number + '. ' + o.label); input.focus(); });
        box.append(b);
      }
      li.append(box);
    }
    if (item.kind === 'answer' && !item.rated) {
      const fb = el('div', { class: 'feedback', role: 'group', 'aria-label': '这条回答有帮助吗' }, '有帮助吗？');
      const up = el('button', { type: 'button', class: 'rate-up', 'aria-label': '有帮助', text: '👍' });
      const down = el('button', { type: 'button', class: 'rate-down', 'aria-label': '没有帮助', text: '👎' });
      up.addEventListener('click', () => rate(index, true));
      down.addEventListener('click', () => rate(index, false));
      fb.append(up, down);
      li.append(fb);
    }
    return li;
  }

  function render() {
    clear(log);
    if (!s.items.length) log.append(bubble({ from: 'bot', text: '您好，我是智能客服，请问有什么可以帮您？' }, -1));
    s.items.forEach((it, i) => log.append(bubble(it, i)));
    log.scrollTop = log.scrollHeight;
    showState();
  }

  function showState() {
    if (s.state === 'queued') {
      let t = '正在为您转接人工客服';
      if (s.position) t += '，您前面排第 ' + s.position + ' 位';
      if (s.wait) t += '，预计等待约 ' + s.wait + ' 分钟';
      setStatus(t + '。');
    } else if (s.state === 'claimed') {
      setStatus((s.agent || '人工客服') + ' 正在为您服务');
    } else {
      setStatus('');
    }
  }

  function rate(index, good) {
    const it = s.items[index];
    if (!it) return;
    it.rated = true;
    save();
    const fb = log.querySelector('li[data-index="' + index + '"] .feedback');
    if (fb) fb.remove();
    send(good ? '满意' : '没用', good ? '👍' : '👎');
    input.focus();
  }

  function showReply(r) {
    if (!r) return;
    if (r.handoff) {
      s.ticket = r.handoff.ticket;
      if (r.handoff.state === 'queued') {
        s.state = 'queued';
        s.position = r.handoff.position;
        s.wait = r.handoff.wait_minutes;
      } else if (r.handoff.state === 'cancelled') {
        s.state = null;
      }
    }
    if (r.text) {
      add({ from: 'bot', kind: r.kind, text: r.text, optionsTitle: r.options_title, options: r.options || [] });
    } else {
      save();
      showState();
    }
  }

  // Sends (and resends, after a failure) one message; the same message_id makes the
  // server answer a repeat from its record instead of handling it twice.
  async function deliver(p) {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await api('POST', '/v1/messages', { user: s.user, text: p.text, message_id: p.id, channel: 'web' });
        s.pending = s.pending.filter((x) => x.id !== p.id);
        if (r.status === 200) {
          showReply(r.body);
        } else {
          save();
          add({ from: 'system', text: (r.body && r.body.error && r.body.error.message) || '发送失败，请稍后再试' });
        }
        return;
      } catch (_) {
        setStatus('网络不稳定，正在重新发送…');
        await new Promise((res) => setTimeout(res, Math.min(1000 * (attempt + 1), 5000)));
      }
    }
  }

  function send(text, shown) {
    text = text.trim();
    if (!text) return;
    const p = { id: randomId(), text };
    s.pending.push(p);
    add({ from: 'me', text: shown || text });
    deliver(p);
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const t = input.value;
    input.value = '';
    send(t);
    input.focus();
  });

  // The live stream: agent messages (id = seq), the chat's state, notices.
  let source = null;
  function connect() {
    if (source) source.close();
    source = new EventSource('/v1/messages/stream?user=' + encodeURIComponent(s.user) + '&after=' + s.seq);
    source.addEventListener('agent_message', (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch (_) { return; }
      if (typeof m.seq !== 'number' || m.seq <= s.seq) return;
      s.seq = m.seq;
      add({ from: 'agent', agent: s.agent, text: m.text });
    });
    source.addEventListener('handoff', (e) => {
      let h;
      try { h = JSON.parse(e.data); } catch (_) { return; }
      const was = s.state, wasTicket = s.ticket;
      if (h.state === 'claimed') {
        s.state = 'claimed';
        s.agent = h.agent || '人工客服';
        if (was !== 'claimed' || wasTicket !== h.ticket) add({ from: 'system', text: s.agent + ' 已接入，正在为您服务' });
      } else if (h.state === 'queued') {
        s.state = 'queued';
        if (was === 'claimed' && wasTicket === h.ticket) add({ from: 'system', text: '客服暂时离开，已为您重新排队' });
      } else {
        s.state = null;
        if (was && wasTicket === h.ticket) add({ from: 'system', text: '人工服务已结束，智能客服继续为您服务' });
      }
      s.ticket = h.ticket;
      save();
      showState();
    });
    source.addEventListener('notice', (e) => {
      let r;
      try { r = JSON.parse(e.data); } catch (_) { return; }
      if (r.handoff && r.handoff.state !== 'queued') s.state = null;
      showReply(r);
    });
    source.addEventListener('open', () => { if (!s.pending.length) showState(); });
  }

  render();
  connect();
  for (const p of s.pending.slice()) deliver(p);
  window.addEventListener('online', connect);
})();
