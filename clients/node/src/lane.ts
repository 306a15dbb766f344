#!/usr/bin/env node
// What a lane runs around each task, as clients/lane.py does: ask for a route, run the agent on the
// chosen model, report each attempt's outcome, and fall through the decision's alternatives when the
// agent fails.
//
//   node dist/lane.js --lane codex --title "Fix the flaky test" -- codex exec --model {model} "Fix it"
//
// `{model}` and `{provider}` in the command are replaced per attempt. The agent's stdin, stdout and
// stderr are the lane's. Reports carry the decision's estimated tokens and no cost (the service
// prices them from its catalog); a failed attempt is a server_error, a timed-out one a timeout. Exit
// status: 0 when a model succeeded, the last attempt's status when every model failed (124 for a
// timeout), 2 when the route was refused, 127 (126) when the agent command is missing (not
// executable): that stops at once, unreported; 143 (130) on SIGTERM (SIGINT), the attempt unreported.
// The agent runs in a process group of its own, ended whole (SIGTERM, then SIGKILL 3 s on) when the
// lane is stopped by SIGTERM or SIGINT, when --timeout-s runs out, and when the agent exits, for
// anything it left running.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, readFileSync, readdirSync, realpathSync, statSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { delimiter, join, sep } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { clone, create } from "@bufbuild/protobuf";
import { ConnectError } from "@connectrpc/connect";
import { ConnectionSettingsError, connectionFromEnv, routingClient, type RoutingClient } from "./connection.js";
import {
  Outcome,
  ReportRequestSchema,
  RouteRequestSchema,
  TaskSchema,
  type ReportAck,
  type ReportRequest,
  type RouteDecision,
  type RouteRequest,
} from "./gen/orxaq/routing/v1/routing_pb.js";

export const EXIT_REFUSED = 2;
export const EXIT_NOT_EXECUTABLE = 126; // as a shell says it
export const EXIT_NOT_FOUND = 127;
export const EXIT_TIMEOUT = 124; // as timeout(1) says it
export const EXIT_INTERRUPTED = 130;
export const EXIT_USAGE = 2;

/** The model call failed in a way another model might not: reported with `outcome`. */
export class ModelCallFailed extends Error {
  constructor(
    why: string,
    readonly outcome: Outcome = Outcome.SERVER_ERROR,
    readonly exitCode?: number,
  ) {
    super(why);
  }
}

/** The lane cannot run its agent at all (a missing or unexecutable binary): stop at once, blame no model. */
export class LaneFault extends Error {
  constructor(
    why: string,
    readonly exitCode: number = EXIT_NOT_FOUND,
  ) {
    super(why);
  }
}

/** One model tried, under a decision of its own, and what was reported for it. */
export interface Attempt {
  decision: RouteDecision;
  outcome: Outcome; // UNSPECIFIED for a lane fault (not reported)
  latencyS: number;
  why: string; // why it failed
  exitCode?: number;
  report?: ReportRequest; // what was sent, if anything
  ack?: ReportAck;
  reportError: string; // the Report call failed: the task's result stands regardless
}

export interface TaskRun<R> {
  decision: RouteDecision; // the task's first decision
  result?: R;
  model: string; // the model that succeeded, if any
  failures: Array<[string, string]>; // (model, why)
  attempts: Attempt[];
  stopped: string; // why the run stopped before trying every model, if it did
}

export interface RunOptions {
  maxAttempts?: number; // models to try at most; 0: all
  report?: boolean; // default true
  onAttempt?: (attempt: Attempt) => void; // once the attempt is reported
}

/**
 * Routes, then tries the chosen model and its alternatives in order, reporting each attempt.
 *
 * Report counts one outcome per decision, so each alternative is routed again as `requestedModel`,
 * which gives the attempt a decision (a provider, a reservation) of its own. When the service answers
 * a model other than the one asked for, that model is tried unless it already was; otherwise the
 * alternative is passed over, its decision unreported. A refused Route for an alternative stops the run.
 * `callModel(model, provider)` resolves with the result, rejects with ModelCallFailed to move on or
 * LaneFault to stop at once.
 */
export async function runTask<R>(
  client: RoutingClient,
  request: RouteRequest,
  callModel: (model: string, provider: string) => Promise<R>,
  options: RunOptions = {},
): Promise<TaskRun<R>> {
  const { maxAttempts = 0, report = true, onAttempt } = options;
  let decision = await client.route(request);
  const run: TaskRun<R> = { decision, model: "", failures: [], attempts: [], stopped: "" };
  let queue = [...decision.alternatives];
  const tried = new Set<string>();
  for (;;) {
    if (!tried.has(decision.model)) {
      tried.add(decision.model);
      const { attempt, returned, stop } = await tryModel(decision, callModel);
      run.attempts.push(attempt);
      if (attempt.outcome !== Outcome.UNSPECIFIED && report) {
        await sendReport(client, request.lane, attempt, run.attempts.length === 1);
      }
      onAttempt?.(attempt);
      if (stop) {
        run.stopped = attempt.why;
        return run;
      }
      if (returned) {
        run.result = returned.value;
        run.model = decision.model;
        return run;
      }
      run.failures.push([decision.model, attempt.why]);
    }
    queue = queue.filter((model) => !tried.has(model));
    const next = queue.shift();
    if (next === undefined || (maxAttempts && run.attempts.length >= maxAttempts)) return run;
    const retry = clone(RouteRequestSchema, request);
    retry.requestedModel = next;
    try {
      decision = await client.route(retry);
    } catch (error) {
      if (!(error instanceof ConnectError)) throw error;
      run.stopped = `route for ${next} refused: ${error.message}`;
      return run;
    }
  }
}

async function tryModel<R>(
  decision: RouteDecision,
  callModel: (model: string, provider: string) => Promise<R>,
): Promise<{ attempt: Attempt; returned?: { value: R }; stop: boolean }> {
  const started = performance.now();
  const attempt = (outcome: Outcome, why = "", exitCode?: number): Attempt => ({
    decision,
    outcome,
    latencyS: (performance.now() - started) / 1000,
    why,
    exitCode,
    reportError: "",
  });
  try {
    const value = await callModel(decision.model, decision.provider);
    return { attempt: attempt(Outcome.SUCCESS), returned: { value }, stop: false };
  } catch (error) {
    if (error instanceof ModelCallFailed) {
      return { attempt: attempt(error.outcome, error.message, error.exitCode), stop: false };
    }
    if (error instanceof LaneFault) {
      // The lane's own fault, not the model's: nothing is reported, the reservation expires.
      return { attempt: attempt(Outcome.UNSPECIFIED, error.message, error.exitCode), stop: true };
    }
    throw error;
  }
}

async function sendReport(client: RoutingClient, lane: string, attempt: Attempt, first: boolean): Promise<void> {
  const { decision } = attempt;
  const passed = attempt.outcome === Outcome.SUCCESS;
  const request = create(ReportRequestSchema, {
    decisionId: decision.decisionId,
    lane,
    provider: decision.provider,
    model: decision.model,
    inputTokens: decision.inputTokens, // the decision's estimate: priced by the service's catalog
    outputTokens: decision.outputTokens,
    latencyS: attempt.latencyS,
    outcome: attempt.outcome,
    validationPassed: passed,
    firstTimePass: first && passed,
  });
  attempt.report = request;
  try {
    attempt.ack = await client.report(request);
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    attempt.reportError = error.message;
  }
}

let running: ChildProcess | undefined; // the agent now running, for a signal to stop
let stopping = false; // a signal is stopping the lane: the attempt running is not settled, nor reported

export const GRACE_MS = 3_000; // between the SIGTERM to an agent's process group and the SIGKILL

/** Signals the process group `pgid`: whether it was there. */
function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM" && signal === 0; // a member not ours to signal
  }
}

/**
 * Whether a process of the group still runs. A member that died is a zombie, still in the group,
 * until its parent reaps it; an orphan's parent, init, may never (PID 1 of a container often does
 * not): so, where /proc tells, a group of zombies alone is over.
 */
function groupAlive(pgid: number): boolean {
  if (!signalGroup(pgid, 0)) return false;
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return true;
  }
  let seen = false;
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let fields: string[];
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1");
      fields = stat.slice(stat.lastIndexOf(")") + 1).trim().split(/\s+/); // after the command's name
    } catch {
      continue;
    }
    if (fields[2] === String(pgid)) {
      if (fields[0] !== "Z") return true;
      seen = true;
    }
  }
  return !seen; // no member in sight (another /proc than ours): as kill(2) says
}

/**
 * Ends the process group an agent leads (it was spawned detached, in a session of its own): SIGTERM
 * to the group, then SIGKILL to whatever of it is left `graceMs` on. Also after the agent exited, for
 * what it left running in its group.
 */
export async function endGroup(pgid: number, graceMs = GRACE_MS): Promise<void> {
  if (!signalGroup(pgid, "SIGTERM")) return;
  const deadline = performance.now() + graceMs;
  while (performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (!groupAlive(pgid)) return;
  }
  signalGroup(pgid, "SIGKILL");
}

/** Runs the agent command per attempt: resolves with its exit status 0, or rejects as lane.py does. */
export function commandRunner(template: string[], timeoutS = 0): (model: string, provider: string) => Promise<number> {
  return (model, provider) =>
    new Promise((resolve, reject) => {
      const argv = template.map((part) => part.replaceAll("{model}", model).replaceAll("{provider}", provider));
      process.stderr.write(`lane: running ${argv.join(" ")}\n`);
      // detached: a session and process group of its own, ended whole.
      const child = spawn(argv[0], argv.slice(1), { stdio: "inherit", detached: true });
      running = child;
      let timedOut = false;
      const timer =
        timeoutS > 0
          ? setTimeout(() => {
              timedOut = true;
              if (child.pid !== undefined) void endGroup(child.pid);
            }, timeoutS * 1000)
          : undefined;
      const settle = () => {
        clearTimeout(timer);
        running = undefined;
      };
      child.once("error", (error: NodeJS.ErrnoException) => {
        settle();
        if (error.code === "ENOENT") reject(new LaneFault(`${argv[0]}: command not found`, EXIT_NOT_FOUND));
        else if (error.code === "EACCES") reject(new LaneFault(`${argv[0]}: cannot run it`, EXIT_NOT_EXECUTABLE));
        else reject(error);
      });
      child.once("exit", async (code, signal) => {
        clearTimeout(timer);
        // What the agent left running in its group must not outlive the attempt.
        if (child.pid !== undefined) await endGroup(child.pid);
        settle();
        if (stopping) return; // the lane is exiting: the attempt stays unreported
        if (timedOut) {
          reject(new ModelCallFailed(`timed out after ${timeoutS} s`, Outcome.TIMEOUT, EXIT_TIMEOUT));
        } else if (code === EXIT_NOT_FOUND || code === EXIT_NOT_EXECUTABLE) {
          // What a shell answers for a command it cannot find or run: the lane's setup, not the model.
          const meaning = code === EXIT_NOT_FOUND ? "command not found" : "command not executable";
          reject(new LaneFault(`${argv[0]} exited ${code}, a shell's '${meaning}'`, code));
        } else if (code !== 0) {
          // Killed by a signal: as a shell says it.
          const status = code ?? 128 + (osConstants.signals[signal as NodeJS.Signals] ?? 0);
          reject(new ModelCallFailed(`exit status ${status}`, Outcome.SERVER_ERROR, status));
        } else {
          resolve(0);
        }
      });
    });
}

/** SIGTERM and SIGINT end the running agent's whole process group, then the lane, the attempt unreported. */
function stopOnSignals(): void {
  const stop = async (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`lane: ${signal}: stopping the agent\n`);
    const child = running;
    if (child?.pid !== undefined) await endGroup(child.pid); // the agent must not outlive the lane
    process.stderr.write("lane: interrupted; the attempt is not reported\n");
    process.exit(128 + osConstants.signals[signal]);
  };
  for (const signal of ["SIGTERM", "SIGINT"] as const) process.on(signal, (name) => void stop(name));
}

/** Before routing: the agent command's program, unless it is a template part. */
export function missingBinary(command: string[]): LaneFault | undefined {
  const program = command[0];
  if (program.includes("{")) return undefined;
  const executable = (path: string) => {
    try {
      accessSync(path, constants.X_OK);
      return statSync(path).isFile();
    } catch {
      return false;
    }
  };
  if (program.includes(sep)) {
    if (executable(program)) return undefined;
    try {
      statSync(program);
      return new LaneFault(`${program}: not executable`, EXIT_NOT_EXECUTABLE);
    } catch {
      return new LaneFault(`${program}: command not found`, EXIT_NOT_FOUND);
    }
  }
  const dirs = (process.env.PATH ?? "").split(delimiter).filter(Boolean);
  return dirs.some((dir) => executable(join(dir, program)))
    ? undefined
    : new LaneFault(`${program}: command not found`, EXIT_NOT_FOUND);
}

export function describe(attempt: Attempt): string {
  const outcome = attempt.outcome === Outcome.UNSPECIFIED ? "lane fault" : Outcome[attempt.outcome].toLowerCase();
  let text = `${attempt.decision.model}: ${outcome}` + (attempt.why ? ` (${attempt.why})` : "");
  text += ` in ${attempt.latencyS.toFixed(1)} s`;
  const sent = attempt.report;
  if (sent === undefined) return text + ", not reported";
  text += `; reported ${sent.inputTokens} in / ${sent.outputTokens} out tokens estimated`;
  if (attempt.reportError) return text + `, but the report failed: ${attempt.reportError}`;
  if (attempt.ack) {
    text += `, $${attempt.ack.costUsd.toFixed(4)} ${attempt.ack.costExact ? "exact" : "priced from the catalog"}`;
  }
  return text;
}

const USAGE = `usage: lane.js --lane LANE [--title T] [--kind K] [--task-id ID] [--address HOST:PORT]
               [--max-attempts N] [--timeout-s S] -- AGENT COMMAND ({model}, {provider} replaced)
env: ORXAQ_ADDRESS, ORXAQ_TOKEN or ORXAQ_TOKEN_FILE, ORXAQ_TLS=1 or ORXAQ_TLS_CA`;

export async function main(argv: string[]): Promise<number> {
  const split = argv.indexOf("--");
  const command = split < 0 ? [] : argv.slice(split + 1);
  let values;
  try {
    ({ values } = parseArgs({
      args: split < 0 ? argv : argv.slice(0, split),
      options: {
        address: { type: "string" },
        lane: { type: "string" },
        kind: { type: "string", default: "" },
        title: { type: "string", default: "" },
        "task-id": { type: "string", default: "" },
        "max-attempts": { type: "string", default: "0" },
        "timeout-s": { type: "string", default: "0" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    return usageError((error as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE + "\n");
    return 0;
  }
  const maxAttempts = Number(values["max-attempts"]);
  const timeoutS = Number(values["timeout-s"]);
  if (!values.lane) return usageError("--lane is required");
  if (command.length === 0) return usageError("give the agent command after --");
  if (!Number.isInteger(maxAttempts) || maxAttempts < 0) return usageError("--max-attempts must be 0 (all) or more");
  if (!Number.isFinite(timeoutS) || timeoutS < 0) return usageError("--timeout-s must be 0 (none) or more");

  let client: RoutingClient;
  try {
    client = routingClient(connectionFromEnv(values.address));
  } catch (error) {
    if (error instanceof ConnectionSettingsError) return usageError(error.message);
    throw error;
  }
  const missing = missingBinary(command);
  if (missing) {
    process.stderr.write(`lane: ${missing.message}; nothing routed\n`);
    return missing.exitCode;
  }
  const request = create(RouteRequestSchema, {
    lane: values.lane,
    task: create(TaskSchema, { id: values["task-id"], kind: values.kind, title: values.title }),
  });
  stopOnSignals();
  let run: TaskRun<number>;
  try {
    run = await runTask(client, request, commandRunner(command, timeoutS), {
      maxAttempts,
      onAttempt: (attempt) => process.stderr.write(`lane: ${describe(attempt)}\n`),
    });
  } catch (error) {
    if (!(error instanceof ConnectError)) throw error;
    process.stderr.write(`lane: route refused: ${error.message}\n`);
    return EXIT_REFUSED;
  }
  const last = run.attempts[run.attempts.length - 1];
  if (run.model) {
    process.stderr.write(`lane: done on ${run.model} (decision ${last.decision.decisionId})\n`);
    return 0;
  }
  if (last.outcome === Outcome.UNSPECIFIED) {
    process.stderr.write("lane: stopped at once, the agent cannot run here: not reported, no other model tried\n");
    return last.exitCode || EXIT_NOT_FOUND;
  }
  if (run.stopped) process.stderr.write(`lane: stopped: ${run.stopped}\n`);
  process.stderr.write(`lane: every model tried failed (decision ${run.decision.decisionId})\n`);
  return last.exitCode || 1;
}

function usageError(message: string): number {
  process.stderr.write(`${USAGE}\nlane: error: ${message}\n`);
  return EXIT_USAGE;
}

// Run as a program (node dist/lane.js, or the orxaq-lane bin), not when imported.
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  process.exitCode = await main(process.argv.slice(2));
}
