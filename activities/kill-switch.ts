/**
 * Whether the kill switch is on, from the raw value of `quantum:governor:kill_switch`. It fails safe: anything but
 * absent or exactly `0` is on (`1`, `true`, `on`, even `off` or an empty string), because an operator who wrote
 * something there meant to stop trading more often than not, and a plan that does not trade loses nothing.
 */
export function killSwitchOn(raw: string | null): boolean {
  return raw !== null && raw !== '0';
}
