/**
 * The per-symbol line's timing, shared by the workflow (how long a waiter sleeps) and the line's Lua (when a silent
 * waiter counts as gone). Pure constants: the workflow bundle imports this module.
 */

/**
 * A waiter is woken by a signal from the plan letting go of the symbol; it also wakes by itself this often (or at
 * the holder's lease end, if sooner) to show it is alive and to take a symbol whose holder crashed.
 */
export const WAITER_REFRESH_MS = 30_000;

/** A waiter silent for this long has stopped (terminated, or its worker fleet is down) and loses its place. */
export const WAITER_STALE_MS = 3 * WAITER_REFRESH_MS;
