// Package e2e holds end-to-end tests: they build the real bridge binary into
// a temporary directory and run it against real peers (libcoap's
// coap-client/coap-server, mosquitto). A missing peer binary skips the test
// locally and fails it when BRIDGE_E2E_STRICT=1 (as .ci/run sets).
package e2e
