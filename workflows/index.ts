export { permitChain } from './permit-chain';
export { benchFloor, benchShape } from './bench-floor';
export { operatorOperation } from './operator-operation';
