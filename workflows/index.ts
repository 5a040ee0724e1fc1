export { permitChain } from './permit-chain';
export { benchFloor } from './bench-floor';
