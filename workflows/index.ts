export { permitChain } from './permit-chain';
export { operatorOperation } from './operator-operation';
