// Routes one task and prints the decision: the smallest use of the generated client.
//
//   node dist/example.js --lane codex --title "Fix the flaky test" [--json]
//
// The service's address and credentials come from the environment (ORXAQ_ADDRESS, ORXAQ_TOKEN,
// ORXAQ_TLS_CA: see connection.ts). The decision is reserved against the budgets until it expires:
// a lane that runs the task reports it (lane.ts does).
import { create, toJsonString } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { parseArgs } from "node:util";
import { ConnectionSettingsError, connectionFromEnv, routingClient } from "./connection.js";
import {
  FallbackReason,
  RouteDecisionSchema,
  RouteRequestSchema,
  Strategy,
} from "./gen/orxaq/routing/v1/routing_pb.js";

const { values } = parseArgs({
  options: {
    address: { type: "string" },
    lane: { type: "string", default: "codex" },
    title: { type: "string", default: "Fix the flaky test" },
    kind: { type: "string", default: "" },
    json: { type: "boolean", default: false },
  },
});

try {
  const client = routingClient(connectionFromEnv(values.address));
  const decision = await client.route(
    create(RouteRequestSchema, { lane: values.lane, task: { title: values.title, kind: values.kind } }),
  );
  if (values.json) {
    console.log(toJsonString(RouteDecisionSchema, decision));
  } else {
    console.log(`decision ${decision.decisionId}`);
    console.log(`model ${decision.model} (${decision.provider})`);
    console.log(`strategy ${Strategy[decision.strategy]}, fallback ${FallbackReason[decision.fallbackReason]}`);
    console.log(`estimated $${decision.estimatedCostUsd.toFixed(4)}, ${decision.estimatedLatencyS.toFixed(1)} s`);
    console.log(`alternatives ${decision.alternatives.join(", ") || "none"}`);
    console.log(decision.rationale);
  }
} catch (error) {
  if (error instanceof ConnectionSettingsError) console.error(`example: ${error.message}`);
  else if (error instanceof ConnectError) console.error(`route refused: ${error.message}`);
  else throw error;
  process.exitCode = 2;
}
