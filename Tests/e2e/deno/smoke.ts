// What a user does after `make run`: set, get, list, atomic commit.
const kv = await Deno.openKv(Deno.args[0]);
await kv.set(["smoke", 1], "one");
await kv.set(["smoke", 2], "two");
const got = await kv.get(["smoke", 1]);
const listed = await Array.fromAsync(kv.list({ prefix: ["smoke"] }));
const r = await kv.atomic().check(got).set(["smoke", 1], "uno").commit();
console.log(JSON.stringify({ get: got.value, listed: listed.length, atomic: r.ok, after: (await kv.get(["smoke", 1])).value }));
kv.close();
