import { hostPort } from '../format.js';
import type { DaemonPlugin } from '../observer.js';

/**
 * Says when a whole service has no live backend (and when it has one again): the
 * rules then mark nothing and DNAT nothing, so new connections to the VIP reach the
 * balancer itself, which refuses them unless it listens on that port.
 */
export const outagePlugin: DaemonPlugin = ({ daemon, log }) => {
  const dark = new Set<string>();
  return {
    onTransition(backend) {
      const service = backend.spec.service;
      const members = daemon.backends().filter((b) => b.spec.service === service);
      const allDown = members.length > 0 && members.every((b) => b.health.state === 'down');
      if (allDown && !dark.has(service)) {
        dark.add(service);
        const config = daemon.config().services.find((s) => s.name === service);
        const where = config?.vip ? hostPort(config.vip, config.port) : `port ${config?.port ?? '?'}`;
        log.error(
          { event: 'service_down', service, backends: members.length },
          `service ${service} has no live backend (all ${members.length} down): new connections to ${where} are refused until one comes back`,
        );
      } else if (!allDown && dark.delete(service)) {
        log.info(
          { event: 'service_up', service, backend: backend.spec.name },
          `service ${service} has a live backend again (${backend.spec.name})`,
        );
      }
    },
  };
};
