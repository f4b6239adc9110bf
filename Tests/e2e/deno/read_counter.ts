const [url, key] = Deno.args;
const kv = await Deno.openKv(url);
console.log(JSON.stringify({ value: (await kv.get(["cas", key])).value }));
kv.close();
