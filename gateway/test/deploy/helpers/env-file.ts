/** The value of KEY in .env text (the last assignment wins, as in docker compose). */
export function envFileValue(text: string, key: string): string | undefined {
  let value: string | undefined;
  for (const line of text.split(/\r?\n/)) {
    const match = new RegExp(`^\\s*${key}\\s*=(.*)$`).exec(line);
    if (match) value = match[1]!.trim();
  }
  return value;
}
