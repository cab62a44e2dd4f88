import { Vault, VaultError } from "vaultstore-wasm";

const vault = await Vault.open({ backend: "memory" });
const password = "correct horse battery staple";

const token = await vault.tokenCreate("4111 1111 1111 1111", password);
console.log(token.startsWith("tk_"), token.length);
console.log(await vault.tokenRead(token, password));

try {
  await vault.tokenRead(token, "not the password");
} catch (error) {
  console.log(error instanceof VaultError, error.code);
}
await vault.close();
