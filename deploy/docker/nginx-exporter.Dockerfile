# syntax=docker/dockerfile:1
# nginx-prometheus-exporter with a healthcheck. The published image is FROM
# scratch, so a container healthcheck has nothing to run; this adds one static
# busybox binary (for `busybox wget`) and changes nothing else.
ARG EXPORTER_IMAGE=nginx/nginx-prometheus-exporter:1.4.2
ARG BUSYBOX_IMAGE=busybox:1.37-musl

FROM ${BUSYBOX_IMAGE} AS busybox

FROM ${EXPORTER_IMAGE}
COPY --from=busybox /bin/busybox /bin/busybox
# Same unprivileged user as the upstream image.
USER 1001:1001
EXPOSE 9113
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD ["/bin/busybox", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9113/metrics"]
