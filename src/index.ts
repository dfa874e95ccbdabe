/**
 * flora: peer-to-peer federated fine-tuning with heterogeneous LoRA adapters (FLoRA).
 *
 * The root entry holds what an app needs to run or embed a peer and to work with
 * adapters, without loading TensorFlow.js:
 *   - the peer (`createPeer`, the `flora()` libp2p service, swarm config, events),
 *   - adapters (`src/lora`: types, init, wire format),
 *   - aggregation (`src/aggregation`: strategies, deterministic merge, state hash).
 * The model layer (tfjs) is `flora-p2p/model`, its data sets `flora-p2p/model/data`.
 */
export * from './node/index.js'
export * from './lora/index.js'
export * from './aggregation/index.js'
