// The engine's query validation (src/wasm/query.rs `query_from_value`, then src/query.rs
// `RecordQuery::validate`), mirrored for the one moment no engine is running: `validate()` in a
// browser before the first `Vault.open`. Every Vault method still hands its query to the engine,
// which checks it again; tests/js/query-check.test.mjs holds both to the same verdict, code and
// message on a table of good and bad queries.
import { VaultError } from "./errors.js";

/** The fields of a `QueryInit`, in the order the engine checks them. */
export const QUERY_FIELDS = [
  "id",
  "idIn",
  "token",
  "tokenIn",
  "limit",
  "offset",
  "orderBy",
  "sortOrder",
  "softDeletedInclude",
  "softDeletedOnly",
  "expiredOnly",
  "countOnly",
] as const;

const ORDER_BY = ["created_at", "updated_at", "expires_at", "token", "id"];

function invalid(message: string): VaultError {
  return new VaultError("INVALID_ARGUMENT", `invalid argument: ${message}`);
}

/** How a value reads in an error message (src/wasm/convert.rs `type_name`). */
export function typeName(value: unknown): string {
  if (value === undefined) return "undefined";
  if (value === null) return "null";
  if (typeof value === "number") return "number";
  if (typeof value === "string") return "string";
  if (typeof value === "boolean") return "boolean";
  if (typeof value === "function") return "function";
  if (typeof value === "bigint") return "bigint";
  if (typeof value === "symbol") return "symbol";
  if (value instanceof Array) return "Array";
  if (value instanceof Date) return "Date";
  if (ArrayBuffer.isView(value)) return "a typed array or DataView";
  return "object";
}

function optString(value: unknown, what: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw invalid(`${what} must be a string, got ${typeName(value)}`);
  return value;
}

function optStrings(value: unknown, what: string): void {
  if (value === undefined || value === null) return;
  if (!Array.isArray(value)) throw invalid(`${what} must be an array of strings, got ${typeName(value)}`);
  for (let i = 0; i < value.length; i++) {
    const item: unknown = value[i];
    if (typeof item !== "string") throw invalid(`${what}[${i}] must be a string, got ${typeName(item)}`);
  }
}

function optInteger(value: unknown, what: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "number") throw invalid(`${what} must be a number, got ${typeName(value)}`);
  if (!Number.isSafeInteger(value)) throw invalid(`${what} must be an integer`);
  return value === 0 ? 0 : value; // -0 becomes the integer 0, as in the engine
}

function optBool(value: unknown, what: string): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value !== "boolean") throw invalid(`${what} must be a boolean, got ${typeName(value)}`);
  return value;
}

/** Throw what the engine would throw for this `QueryInit` (a `VaultError`, `INVALID_ARGUMENT`). */
export function checkQuery(value: unknown): void {
  if (value === undefined || value === null) return;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw invalid(`query must be an object, got ${typeName(value)}`);
  }
  for (const key of Object.keys(value)) {
    if (!(QUERY_FIELDS as readonly string[]).includes(key)) {
      // The key is not quoted: it is the caller's text (API.md "Errors").
      throw invalid(`query has an option that is not one of: ${QUERY_FIELDS.join(", ")}`);
    }
  }
  const q = value as Record<string, unknown>;
  const id = optString(q.id, "query.id");
  optStrings(q.idIn, "query.idIn");
  const token = optString(q.token, "query.token");
  optStrings(q.tokenIn, "query.tokenIn");
  const limit = optInteger(q.limit, "query.limit");
  const offset = optInteger(q.offset, "query.offset");
  const orderBy = optString(q.orderBy, "query.orderBy");
  const sortOrder = optString(q.sortOrder, "query.sortOrder");
  for (const flag of ["softDeletedInclude", "softDeletedOnly", "expiredOnly"] as const) optBool(q[flag], `query.${flag}`);
  const countOnly = optBool(q.countOnly, "query.countOnly");

  if (limit !== undefined && limit < 0) throw invalid("limit must be 0 or more");
  if (offset !== undefined && offset < 0) throw invalid("offset must be 0 or more");
  if (countOnly && ((limit ?? 0) > 0 || (offset ?? 0) > 0)) {
    throw invalid("countOnly cannot be combined with limit or offset; a count covers every matching record");
  }
  if (id === "") throw invalid("id must be a non-empty string");
  if (token === "") throw invalid("token must be a non-empty string");
  if (orderBy !== undefined && !ORDER_BY.includes(orderBy)) {
    throw invalid("orderBy must be one of created_at, updated_at, expires_at, token, id");
  }
  if (sortOrder !== undefined && sortOrder !== "asc" && sortOrder !== "desc") {
    throw invalid('sortOrder must be "asc" or "desc"');
  }
}
