# livemerge workers. The same image runs the engine (`worker engine`) and, on hypervisors, the host agent
# (`worker host --host-id ID [--storage]`, with the libvirt socket and the storage root mounted).
FROM node:20-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvirt0 qemu-utils ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/livemerge
COPY package.json package-lock.json ./
RUN npm install --omit=dev --no-fund --no-audit
COPY bin ./bin
COPY src ./src
COPY tsconfig.json ./
ENV NODE_ENV=production
ENTRYPOINT ["node", "bin/livemerge.cjs"]
CMD ["worker", "engine"]
