// The shop template's WeChat mini program. `lib/cloudlet-sdk.js` is the SDK's CommonJS build:
// `cloudlet init` writes it (or `npm run build` in sdk/js and copy dist/index.js).
const { createClient } = require("./lib/cloudlet-sdk.js");
const config = require("./config.js");

App({
  onLaunch() {
    this.cloud = createClient({ server: config.server, app: config.app });
  },
});
