export { permitChain } from './permit-chain';
export { benchFloor, benchShape } from './bench-floor';
