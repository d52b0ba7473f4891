// The content page: upload a content set, see every problem at its file and line,
// publish, and read the unanswered report and statistics.
'use strict';
(function () {
  const { el, api, errorText, clear } = window.kefu;
  const $ = (id) => document.getElementById(id);
  let csrf = null;

  function showSignin(msg) {
    csrf = null;
    $('content').hidden = true; $('signout').hidden = true;
    $('signin').hidden = false; $('signin-error').textContent = msg || '';
    $('token').focus();
  }
  function signedIn(body) {
    csrf = body.csrf;
    $('signin').hidden = true; $('content').hidden = false; $('signout').hidden = false;
    refresh();
  }
  async function call(method, path, body) {
    const r = await api(method, path, body, csrf);
    if (r.status === 401) showSignin('登录已失效，请重新登录');
    return r;
  }

  $('signin-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const r = await api('POST', '/v1/admin/session', { token: $('token').value });
    $('token').value = '';
    if (r.status === 200) signedIn(r.body); else $('signin-error').textContent = '令牌无效';
  });
  $('signout').addEventListener('click', async () => {
    await api('DELETE', '/v1/admin/session', undefined, csrf);
    showSignin('');
  });

  function readFile(file, folder) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      const binary = /\.xlsx$/i.test(file.name);
      r.onload = () => {
        const name = folder + '/' + file.name;
        if (!binary) { resolve({ name, content: r.result }); return; }
        const bytes = new Uint8Array(r.result);
        let s = '';
        for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
        resolve({ name, content_base64: btoa(s) });
      };
      r.onerror = () => reject(r.error);
      if (binary) r.readAsArrayBuffer(file); else r.readAsText(file, 'utf-8');
    });
  }

  async function upload(publish) {
    const files = [];
    for (const f of $('kb-files').files) files.push(await readFile(f, 'knowledge-base'));
    for (const f of $('intent-files').files) files.push(await readFile(f, 'intents'));
    const tbody = $('problems').querySelector('tbody');
    clear(tbody); $('problems').hidden = true;
    if (!files.length) { $('result').className = 'bad'; $('result').textContent = '请先选择文件'; return; }
    $('result').className = ''; $('result').textContent = publish ? '正在发布…' : '正在校验…';
    const r = await call('POST', publish ? '/v1/admin/kb/publish' : '/v1/admin/kb/validate', { files });
    const rep = r.body;
    if (!rep || rep.valid === undefined) { $('result').className = 'bad'; $('result').textContent = errorText(r); return; }
    if (rep.valid) {
      $('result').className = 'ok';
      $('result').textContent = (publish ? '已发布' : '校验通过') + '：版本 ' + rep.version + '，' + rep.entries + ' 个条目，' +
        rep.similar_questions + ' 个相似问法，' + rep.categories + ' 个分类';
      if (publish) refresh();
      return;
    }
    $('result').className = 'bad';
    $('result').textContent = (publish ? '未发布，' : '') + '发现 ' + rep.problems.length + ' 个问题：';
    for (const p of rep.problems) {
      tbody.append(el('tr', { class: 'problem' }, el('td', { text: p.file }), el('td', { class: 'line', text: String(p.line) }),
        el('td', { text: p.column === null || p.column === undefined ? '' : String(p.column) }), el('td', { text: p.message })));
    }
    $('problems').hidden = false;
  }
  $('upload-form').addEventListener('submit', (e) => { e.preventDefault(); upload(false); });
  $('publish').addEventListener('click', () => upload(true));

  const LABELS = { version: '知识库版本', entries: '条目', queued: '排队中', questions: '提问', answered: '直接回答',
    asked_back: '反问确认', unanswered: '未答', handoffs: '转人工', feedback_positive: '👍 满意', feedback_negative: '👎 没用' };
  async function refresh() {
    const s = await call('GET', '/v1/admin/stats');
    if (s.status === 200) {
      clear($('stats'));
      for (const [k, label] of Object.entries(LABELS)) $('stats').append(el('dt', { text: label }), el('dd', { text: String(s.body[k]) }));
    }
    const u = await call('GET', '/v1/admin/report/unanswered');
    const tbody = $('unanswered').querySelector('tbody');
    clear(tbody);
    if (u.status !== 200) return;
    for (const g of u.body.slice(0, 100)) {
      const q = el('td', {}, g.question);
      if (g.variants.length) q.append(el('span', { class: 'meta muted', text: ' 又问：' + g.variants.slice(0, 3).join('；') }));
      tbody.append(el('tr', {}, q, el('td', { text: String(g.count) }), el('td', { text: String(g.no_match) }), el('td', { text: g.nearest_entry || '—' })));
    }
    if (!u.body.length) tbody.append(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: '暂无' })));
  }
  $('refresh').addEventListener('click', refresh);

  (async () => {
    const r = await api('GET', '/v1/admin/session');
    if (r.status === 200) signedIn(r.body); else showSignin('');
  })();
})();
