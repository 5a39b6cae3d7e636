// How the browser tests start Debian's Chromium: headless, and with nothing that would
// reach the network on its own (this machine has none but loopback).
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export function launchOptions(extraArgs = []) {
  return { executablePath: '/usr/bin/chromium', headless: true, args: [...CHROMIUM_ARGS, ...extraArgs] }
}
