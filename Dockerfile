# Multi-stage build: a static bridge binary on a small non-root image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/bridge ./cmd/bridge

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/bridge /usr/local/bin/bridge
COPY config.toml /etc/bridge/config.toml
COPY rules/*.toml /etc/bridge/rules/
WORKDIR /etc/bridge
USER nonroot:nonroot
EXPOSE 5683/udp 5684/udp 1883/tcp 9100/tcp
ENTRYPOINT ["/usr/local/bin/bridge"]
CMD ["run", "--config", "/etc/bridge/config.toml"]
