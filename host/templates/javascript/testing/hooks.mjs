// Module hooks (run on Node's loader thread): `sluice:connector/<interface>@<version>`, which
// only the gateway provides, becomes a module exporting that interface of the fake in host.mjs.
const PREFIX = "sluice:connector/";
const HOST = new URL("./host.mjs", import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  if (!specifier.startsWith(PREFIX)) return nextResolve(specifier, context);
  const name = specifier.slice(PREFIX.length).split("@")[0];
  return { url: `sluice-fake:${name}`, shortCircuit: true };
}

export async function load(url, context, nextLoad) {
  if (!url.startsWith("sluice-fake:")) return nextLoad(url, context);
  const name = url.slice("sluice-fake:".length);
  const source = `import { ${name} } from ${JSON.stringify(HOST)};\nexport default ${name};\n`;
  return { format: "module", source, shortCircuit: true };
}
