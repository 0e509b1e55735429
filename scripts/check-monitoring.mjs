// Validates Prometheus Operator objects (read as a JSON array on stdin)
// against the schemas of @kubernetes-models/prometheus-operator.
import { PodMonitor, PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { PodMonitor, PrometheusRule, ServiceMonitor };
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = 0;
for (const obj of JSON.parse(input)) {
  const what = `${obj.kind}/${obj.metadata?.name}`;
  const Kind = kinds[obj.kind];
  if (!Kind) {
    console.log(`FAIL ${what}: no schema for this kind`);
    failed++;
    continue;
  }
  try {
    new Kind(obj).validate();
    console.log(`ok   ${what} (prometheus-operator schema)`);
  } catch (e) {
    console.log(`FAIL ${what}: ${e.message}`);
    failed++;
  }
}
process.exit(failed ? 1 : 0);
