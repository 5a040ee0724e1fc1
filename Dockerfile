# syntax=docker/dockerfile:1
# The chain's image: the compiled CLI and the prebuilt workflow bundle on production dependencies only, run as the
# base image's non-root user `node`. One image for every process of the chain; the command is the CLI's:
#   docker build --target runtime -t quantum-permit-chain .
#   docker run --rm -e REDIS_URL=… -e TEMPORAL_ADDRESS=… -e TRADING_MODE=testnet quantum-permit-chain worker
#   docker run --rm … quantum-permit-chain intake --consumer intake-1
# test/integration/image.test.ts runs both stages' steps without Docker and starts the worker they make.

# The Node of .node-version (the test checks that they agree).
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# Build: every dependency; tsc to dist/ and the workflow bundle at dist/workflow-bundle.js (npm run build).
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json .node-version ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
# The whole context (less .dockerignore's): tsc follows the sources' imports wherever they lead.
COPY . .
RUN npm run build

# Runtime: production dependencies and dist/; no TypeScript, tsx or webpack at start. The lock file stays: the worker
# checks at start that the bundle was built against it. Only this machine's Temporal core bridge is kept.
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --no-audit --no-fund \
  && find node_modules/@temporalio/core-bridge/releases -mindepth 1 -maxdepth 1 \
    ! -name "$(uname -m)-unknown-linux-gnu" -exec rm -rf {} +
COPY --from=build /app/dist ./dist
USER node
ENTRYPOINT ["node", "dist/cli/cli.js"]
CMD ["worker"]
