"""The site: accounts with custodial wallets, the faucet, petitions, read models of the Fed, pages and API."""
