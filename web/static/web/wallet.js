// Petition with one's own Arweave wallet: the browser wallet API (window.arweaveWallet, as Wander injects it)
// connects, names the active address and signs an ANS-104 data item; the signed bytes go, as they are, to the
// signed-petition API, which verifies them and forwards them to the Fed. The key never leaves the wallet.
(function () {
  "use strict";
  const form = document.getElementById("wallet-petition");
  if (!form) return;
  const connect = document.getElementById("wallet-connect");
  const send = form.querySelector("button[type=submit]");
  const status = document.getElementById("wallet-status");
  const baseTags = JSON.parse(document.getElementById("petition-tags").textContent);
  const offering = BigInt(form.dataset.offering);
  const denomination = Number(form.dataset.denomination);
  let address = null;

  function say(text, bad) {
    status.textContent = text;
    status.classList.toggle("error", Boolean(bad));
  }

  function amount(units) {
    const scale = 10n ** BigInt(denomination);
    const whole = units / scale;
    const fraction = (units % scale).toString().padStart(denomination, "0").replace(/0+$/, "");
    return whole.toLocaleString("en-US") + (fraction ? "." + fraction : "");
  }

  function enable(on) {
    send.disabled = !on;
    send.setAttribute("aria-disabled", String(!on));
  }

  function anchor() {
    // 32 random characters: an ANS-104 anchor keeps two otherwise equal petitions apart.
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const bytes = crypto.getRandomValues(new Uint8Array(32));
    return Array.from(bytes, (b) => alphabet[b % 64]).join("");
  }

  async function refreshBalance() {
    const response = await fetch(form.dataset.balancesUrl.replace("ADDRESS", address), {headers: {Accept: "application/json"}});
    if (!response.ok) throw new Error("the balance lookup answered HTTP " + response.status);
    const war = BigInt((await response.json()).wAR);
    document.getElementById("wallet-war").textContent = amount(war) + " wAR";
    return war;
  }

  connect.addEventListener("click", async function () {
    if (!window.arweaveWallet) {
      say("No Arweave wallet was found in this browser: install Wander (wander.app), then reload this page.", true);
      return;
    }
    try {
      await window.arweaveWallet.connect(["ACCESS_ADDRESS", "SIGN_TRANSACTION"], {name: "Llama Fed"});
      address = await window.arweaveWallet.getActiveAddress();
    } catch (error) {
      say("The wallet did not connect: " + (error && error.message ? error.message : error) + ".", true);
      return;
    }
    document.getElementById("wallet-address").textContent = address;
    document.getElementById("wallet-details").hidden = false;
    connect.textContent = "Connected";
    connect.disabled = true;
    try {
      const war = await refreshBalance();
      if (war < offering) {
        say("This address holds less than the offering (" + amount(offering) + " wAR): add wAR to it first.", true);
        return;
      }
    } catch (error) {
      say("Could not read the address's balance: " + error.message + ".", true);
      return;
    }
    say("Connected. Write your petition, then sign it in your wallet.");
    enable(true);
  });

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (!address) return;
    const text = form.elements.text.value.trim();
    const name = form.elements.sender_name.value.trim();
    if (!text || !name) {
      say("Write your petition and your name first.", true);
      return;
    }
    const tags = Object.entries(baseTags).map(([k, v]) => ({name: k, value: v})).concat([
      {name: "Recipient", value: form.dataset.fed},
      {name: "Quantity", value: form.dataset.offering},
      {name: "X-Petition", value: text},
      {name: "X-Sender-Name", value: name},
    ]);
    enable(false);
    say("Waiting for your wallet to sign…");
    let signed;
    try {
      signed = await window.arweaveWallet.signDataItem({data: "", tags: tags, target: form.dataset.war, anchor: anchor()});
    } catch (error) {
      say("The wallet did not sign: " + (error && error.message ? error.message : error) + ". Nothing was sent.", true);
      enable(true);
      return;
    }
    say("Sending the signed petition…");
    const response = await fetch(form.dataset.apiUrl, {
      method: "POST", body: signed, credentials: "omit",
      headers: {"Content-Type": "application/octet-stream", Accept: "application/json"},
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      say((body.detail || "The site refused the petition (HTTP " + response.status + ")") + "", true);
      enable(true);
      return;
    }
    say("Sent. Opening its status…");
    window.location.assign(form.dataset.petitionUrl.replace("PETITION_ID", body.id));
  });
})();
