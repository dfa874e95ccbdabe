/** Public API of the peer layer: createPeer, the libp2p service factory, config, events. */
export { createPeer, PeerOptionsError, type FloraPeer, type PeerEvents, type PeerOptions } from './peer.js'
export { BootstrapDialer, type BootstrapFailure } from './bootstrap-dialer.js'
export { flora, FloraService, FLORA_AGENT, type FloraComponents, type FloraEvents, type FloraInit, type FloraStats } from './service.js'
export { createHost, floraGossipsubOptions, type FloraLibp2p, type HostOptions } from './host.js'
export {
  DEFAULT_ROUND_POLICY,
  makeSwarmConfig,
  parseSwarmConfig,
  swarmIdOf,
  SwarmConfigError,
  type RoundPolicy,
  type SwarmConfig,
  type SwarmConfigInit,
} from './config.js'
export {
  RoundEngine,
  trainingSeed,
  type AdapterReceivedDetail,
  type PeerRejectedDetail,
  type RoundCompleteDetail,
  type RoundMetrics,
  type RoundNetwork,
  type RoundPhase,
  type RoundProgress,
  type RoundStalledDetail,
  proposalInfo,
} from './engine.js'
export { RoundLog, lastRecordedRound, verifyChain, type RoundRecord } from './round-log.js'
export { MEMBER_TTL_ROUNDS, memberIds, nextMembership, quorumFor, quorumSize, type Membership, type QuorumRule } from './membership.js'
export { RoundMachine, type MachineEffect, type MachineEvent, type MachineInit, type ProposalInfo, type VoteInfo } from './round-machine.js'
export { applyRound, genesisState, type SwarmState } from './state.js'
export { CUMULATIVE_UPDATE_FORMAT, CumulativeUpdate, exportFederatedModel, type ExportedFile, type ExportManifest, type ExportOptions } from './export.js'
export { computeStateHash } from './state-hash.js'
export { StateDir, StateDirError, readStateDirMeta, type LoadedState, type StateDirMeta } from './state-dir.js'
export { parseSnapshot, serializeSnapshot, SnapshotError } from './snapshot.js'
export { verifyCertifiedCommit, type ChainTip, type CommitCheck } from './state-sync.js'
export { proposerBeats, proposerOrder, proposerPriority } from './proposer.js'
export { identityFromSeed, IdentityError, loadOrCreateIdentity } from './identity.js'
export { syntheticEvalLoss, syntheticTrainer, type SyntheticTrainerOptions, type TrainContext, type Trainer, type TrainResult } from './trainer.js'
export { syntheticShapes, syntheticSwarm, syntheticWeights, type SyntheticModelSpec, type SyntheticSwarmOptions } from './synthetic.js'
export { defaultTrainerBackend, registerTrainerBackend, setupPeer, trainerBackends, type PeerSetup, type SetupOptions, type TrainerBackend, type TrainProgress } from './setup.js'
export { setupPeerInWorker, type InWorkerOptions } from './worker-trainer.js'
export { MODEL_TRAINER_DEFAULTS } from './model-defaults.js'
export { createLogger, type Logger } from './logger.js'
export { wireMetrics, type WireCounter } from './wire-metrics.js'
export {
  DEFAULT_METRICS_HOST,
  METRICS_ADDRESS_FORMAT,
  MetricsAddressError,
  PeerMetrics,
  parseMetricsAddress,
  startMetricsServer,
  type MetricsAddress,
  type MetricsServer,
  type MetricsServerOptions,
  type MetricsSource,
} from './metrics.js'
export { startPeerHttpServer, type PeerHttpServer, type PeerHttpServerOptions } from './http.js'
export { StatusTracker, type MemberStatus, type PeerStatus, type RejectionStatus, type RoundStatus, type StatusSource, type StatusTrackerOptions } from './status.js'
