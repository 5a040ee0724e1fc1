/**
 * An empty workflow: what one workflow costs on the server, start to result, with nothing in it. `permit-chain
 * bench` runs it beside the chain so that the chain's latency reads as a ratio to this floor.
 */
export async function benchFloor(): Promise<void> {}
