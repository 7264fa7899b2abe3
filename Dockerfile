# nf-healthd in a container, for balancer hosts that run services that way.
# Build:  docker build -t nf-healthd .
# Run:    see docs/operating.md, "Docker": host network, NET_ADMIN only, config read-only.
#
# Node 26 is the Active LTS line (since 2026-10-28; 24 is in maintenance until 2028-04).
# Override with --build-arg NODE_IMAGE=node:24-bookworm-slim to stay on Debian 12.
ARG NODE_IMAGE=node:26-trixie-slim

# --- build: dev dependencies (typescript) and the compiler; nothing of it ships
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: "prepare" would run tsc before the sources are here.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc -p tsconfig.json

# --- run: production dependencies, the compiled JavaScript, nft and ipset for the set writers
FROM ${NODE_IMAGE} AS run
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables ipset \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /opt/nf-healthd
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force
COPY bin ./bin
COPY config ./config
COPY --from=build /src/dist ./dist
# Root inside the container, but with only the capabilities `docker run` grants
# (--cap-drop ALL --cap-add NET_ADMIN): /proc/net/nf_condition/* files are root's, mode 0644.
ENTRYPOINT ["node", "--max-semi-space-size=32", "/opt/nf-healthd/bin/nf-healthd.js"]
CMD ["run", "-c", "/etc/nf-healthd/config.yaml"]
