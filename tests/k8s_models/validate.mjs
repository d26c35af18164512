// Validates Kubernetes objects of the gateway projects' kinds against the schemas kubernetes-models
// generated from their CRDs: types, enums, required fields, patterns (unknown fields are not
// reported: CRD schemas prune them rather than refuse them).
// Input (stdin): a JSON array of objects. Output: one JSON object per line, {kind, name, error}.
const PACKAGES = {
  "networking.istio.io": "@kubernetes-models/istio",
  "security.istio.io": "@kubernetes-models/istio",
  "install.istio.io": "@kubernetes-models/istio",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "gateway.envoyproxy.io": "@kubernetes-models/envoy-gateway",
  "projectcontour.io": "@kubernetes-models/contour",
};

let input = "";
for await (const chunk of process.stdin) input += chunk;
for (const object of JSON.parse(input)) {
  const [group, version] = object.apiVersion.split("/");
  const name = object.metadata?.name ?? "";
  const pkg = PACKAGES[group];
  let error = null;
  if (!pkg) {
    error = `no schema for ${object.apiVersion}`;
  } else {
    try {
      const module = await import(`${pkg}/${group}/${version}/${object.kind}`);
      new module[object.kind](object).validate();
    } catch (e) {
      error = String(e.message ?? e);
    }
  }
  console.log(JSON.stringify({ kind: object.kind, name, error }));
}
