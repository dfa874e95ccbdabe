/** One gossipsub topic per swarm carries both announcements and manifests. */
export function swarmTopic(swarmId: string): string {
  return `/flora/1/${swarmId}`
}
