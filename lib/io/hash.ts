/** SHA-256 digests as lowercase hex, of bytes or of a file's contents. */

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function sha256File(path: string): Promise<string> {
  return await sha256Hex(await Deno.readFile(path));
}
