// Where the service is and how to reach it, from the environment the Python clients read:
// ORXAQ_ADDRESS (host:port), ORXAQ_TLS=1 (the system's roots) or ORXAQ_TLS_CA (a PEM CA to trust),
// ORXAQ_TOKEN_FILE or ORXAQ_TOKEN (a bearer token, refused in plaintext beyond loopback).
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { RoutingService } from "./gen/orxaq/routing/v1/routing_pb.js";

export const DEFAULT_ADDRESS = "127.0.0.1:50051";

export type RoutingClient = Client<typeof RoutingService>;

export interface Connection {
  address: string; // host:port, [v6]:port
  tls: boolean;
  ca?: Buffer; // PEM; TLS trusting it instead of the system's roots
  token?: string;
}

/** A setting that cannot be used: the message names the variable. */
export class ConnectionSettingsError extends Error {}

export function connectionFromEnv(address?: string, env: NodeJS.ProcessEnv = process.env): Connection {
  const target = address || env.ORXAQ_ADDRESS || DEFAULT_ADDRESS;
  const caPath = env.ORXAQ_TLS_CA;
  const ca = caPath ? readSetting(caPath, "ORXAQ_TLS_CA") : undefined;
  const tls = ca !== undefined || flag(env.ORXAQ_TLS, "ORXAQ_TLS");
  let token = env.ORXAQ_TOKEN || undefined;
  if (env.ORXAQ_TOKEN_FILE) {
    token = readSetting(env.ORXAQ_TOKEN_FILE, "ORXAQ_TOKEN_FILE").toString("utf8").trim() || undefined;
  }
  if (token && !tls && !isLoopback(target)) {
    throw new ConnectionSettingsError(
      `the bearer token would cross the network in plaintext to ${target}: ` +
        "call over TLS (ORXAQ_TLS=1, or ORXAQ_TLS_CA), or on loopback",
    );
  }
  return { address: target, tls, ca, token };
}

/** A RoutingService client over gRPC (HTTP/2), as a grpcio server speaks it; 10 s per call unless told. */
export function routingClient(connection: Connection, timeoutMs = 10_000): RoutingClient {
  const interceptors: Interceptor[] = [];
  const token = connection.token;
  if (token) {
    interceptors.push((next) => (request) => {
      request.header.set("authorization", `Bearer ${token}`);
      return next(request);
    });
  }
  const transport = createGrpcTransport({
    baseUrl: `${connection.tls ? "https" : "http"}://${connection.address}`,
    nodeOptions: connection.ca ? { ca: connection.ca } : {},
    interceptors,
    defaultTimeoutMs: timeoutMs,
  });
  return createClient(RoutingService, transport);
}

export function isLoopback(address: string): boolean {
  const host = address.startsWith("[") ? address.slice(1, address.indexOf("]")) : address.replace(/:\d*$/, "");
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}

function readSetting(path: string, name: string): Buffer {
  try {
    return readFileSync(path);
  } catch (error) {
    const why = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new ConnectionSettingsError(`${name} ${path}: cannot be read (${why})`);
  }
}

function flag(value: string | undefined, name: string): boolean {
  const text = (value ?? "").trim().toLowerCase();
  if (["", "0", "false", "no", "off"].includes(text)) return false;
  if (["1", "true", "yes", "on"].includes(text)) return true;
  throw new ConnectionSettingsError(`${name}=${JSON.stringify(value)} is neither 1/true/yes/on nor 0/false/no/off`);
}
