// Holds `count` open watch streams (distinct keys) until killed; prints
// "ready" once every stream has delivered its first frame.
const [url, countText] = Deno.args;
const kv = await Deno.openKv(url);
const count = Number(countText);
let ready = 0;
for (let i = 0; i < count; i++) {
  const r = kv.watch([["bench", "idle", i]]).getReader();
  r.read().then(() => { if (++ready === count) console.log("ready"); });
}
await new Promise(() => {});
