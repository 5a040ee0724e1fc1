export { permitChain } from './permit-chain';
export { benchFloor, benchShape } from '../scripts/bench-workflows';
export { operatorOperation } from './operator-operation';
