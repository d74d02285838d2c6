// Package keys is the one vocabulary for secrets and key material in the
// bridge: the Secret type every secret in the process is held in (DTLS
// pre-shared keys, the MQTT password, password hashes), the key syntax of
// rule files, psk_file and the command line (ParseKey), the psk_file format
// (ParsePSKFile) and SPKI pins (Pin).
//
// It has no I/O and no dependency on the DTLS library, so the rule loader
// can use it as well as the DTLS transport (coapside/dtls re-exports what
// its callers need) and the MQTT side.
package keys
