// A tiny browser for sign-in flows: follows redirects by hand, keeping cookies.
// follow(url, { until, jar }) stops at the first Location on origin `until`
// (or, if `until` has a path, at the first Location starting with it) and
// returns it unfetched, fragment included ({ url, status, headers } of the
// redirect that led there), or returns { url, status, headers, body } of the
// first response that is not a redirect. The starting url is always fetched. jar: Map name -> value, shared across calls if passed
// (the cookies go to every origin but `until`; cookie paths are ignored).
// An HTML auto-submit form (response_mode=form_post) is submitted like a browser.
const MAX_HOPS = 20;

function formPost(body) {
  const form = /<form[^>]*\baction="([^"]*)"[^>]*>([\s\S]*?)<\/form>/i.exec(body);
  if (!form || !/method="post"/i.test(form[0])) return undefined;
  const unescape = (s) => s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>').replace(/&amp;/g, '&');
  const fields = new URLSearchParams();
  for (const [input] of form[2].matchAll(/<input[^>]*>/gi)) {
    const name = /\bname="([^"]*)"/i.exec(input);
    const value = /\bvalue="([^"]*)"/i.exec(input);
    if (name) fields.append(unescape(name[1]), unescape(value ? value[1] : ''));
  }
  return { action: unescape(form[1]), fields };
}

export async function follow(url, { until, jar = new Map() } = {}) {
  const untilIsPrefix = until && until.length > new URL(until).origin.length;
  const reached = (u) => until && (untilIsPrefix ? u.startsWith(until) : new URL(u).origin === until);
  const hops = [];
  let method = 'GET';
  let body;
  for (;;) {
    if (hops.length && reached(url)) {
      const last = hops.at(-1);
      return { url, status: last.status, headers: last.headers };
    }
    if (hops.length >= MAX_HOPS) {
      throw new Error(`follow: more than ${MAX_HOPS} hops:\n${hops.map((h) => `${h.status} ${h.url}`).join('\n')}`);
    }
    const headers = {};
    if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
    const res = await fetch(url, { method, headers, body, redirect: 'manual' });
    hops.push({ url, status: res.status, headers: res.headers });
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i).trim();
      const value = pair.slice(i + 1).trim();
      const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a)
        || (/^\s*expires=/i.test(a) && Date.parse(a.split('=')[1]) < Date.now()));
      if (expired || value === '') jar.delete(name);
      else jar.set(name, value);
    }
    const location = res.headers.get('location');
    if ([301, 302, 303, 307, 308].includes(res.status) && location) {
      url = new URL(location, url).href;
      if (res.status !== 307 && res.status !== 308) { method = 'GET'; body = undefined; }
      await res.arrayBuffer();
      continue;
    }
    const text = await res.text();
    const form = res.ok && /html/.test(res.headers.get('content-type') ?? '') ? formPost(text) : undefined;
    if (form) {
      url = new URL(form.action, url).href;
      if (reached(url)) {
        return { url, status: res.status, headers: res.headers, body: text, form: Object.fromEntries(form.fields) };
      }
      method = 'POST';
      body = form.fields.toString();
      continue;
    }
    return { url, status: res.status, headers: res.headers, body: text };
  }
}
