// Writes values 1..final to keys k0..k(n-1), round-robin.
const [url, keysText, finalText] = Deno.args;
const kv = await Deno.openKv(url);
for (let v = 1; v <= Number(finalText); v++) {
  for (let i = 0; i < Number(keysText); i++) await kv.set(["many", `k${i}`], v);
}
kv.close();
