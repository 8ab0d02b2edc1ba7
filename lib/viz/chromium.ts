/** Headless Chromium (Debian `chromium`), used to render plots and to screenshot pages. */

export function chromiumPath(): string | null {
  for (const p of ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]) {
    try {
      Deno.statSync(p);
      return p;
    } catch { /* next */ }
  }
  return null;
}

/**
 * Runs headless Chromium on a local file (a path) or a URL with extra flags; returns its standard
 * output.
 */
export async function runChromium(target: string, flags: string[]): Promise<string> {
  const chromium = chromiumPath();
  if (!chromium) throw new Error("this needs Chromium (Debian package `chromium`)");
  const r = await new Deno.Command(chromium, {
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      ...flags,
      /^[a-z]+:\/\//.test(target) ? target : `file://${target}`,
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  return new TextDecoder().decode(r.stdout);
}
