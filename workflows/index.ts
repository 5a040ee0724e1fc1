export { permitChain } from './permit-chain';
