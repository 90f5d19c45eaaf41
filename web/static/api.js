// The pages' one JSON call: apiClient(unreachable) -> api(method, path, payload), which resolves to the
// reply's JSON or throws an Error whose message the page shows (the server's 4xx detail, or
// `unreachable` when the server cannot be reached).
function apiClient(unreachable) {
  return async function api(method, path, payload) {
    let res;
    try {
      res = await fetch(path, {
        method, headers: payload ? { "Content-Type": "application/json" } : {},
        body: payload ? JSON.stringify(payload) : undefined,
      });
    } catch (e) {
      throw new Error(unreachable(e.message));
    }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) throw new Error(res.status + ": " + (data && data.detail ? data.detail : res.statusText));
    return data;
  };
}
