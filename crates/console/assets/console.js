// The Cloudlet web console: every view, its words in two languages (zh-CN and English), the
// hash router and the calls to the console API (`/console/api/…`) and the admin API
// (`/v1/admin/…`) on the same origin. Plain DOM: no framework, nothing inline (the page is
// served under a strict CSP), no innerHTML. The session is an HttpOnly cookie; the CSRF token
// lives in a module variable only; localStorage holds the chosen language and nothing else.
//
// Routes: #/login, #/apps, #/apps/{name} (its overview), #/apps/{name}/data,
// #/apps/{name}/data/{collection}, #/apps/{name}/files, #/apps/{name}/files/{bucket},
// #/apps/{name}/functions, #/apps/{name}/functions/{fn},
// #/apps/{name}/queues, #/apps/{name}/queues/{queue}, #/apps/{name}/users,
// #/apps/{name}/users/{id}, #/apps/{name}/payments, #/apps/{name}/payments/{order},
// #/apps/{name}/realtime, #/apps/{name}/settings, #/people, #/audit. What a person may change
// on an app follows their role on it (from /console/api/apps); the server checks it again.
//
// data-test attributes (for the end-to-end test, crates/console/e2e/):
//   header:  nav-apps, nav-people, nav-audit, whoami, logout, lang (also id="lang")
//   common:  page-title (the h1), error (an error banner: data-code holds error.code),
//            notice (a success message)
//   login:   login-page, setup-form, setup-token, setup-email, setup-name, setup-password,
//            setup-submit, login-form, login-email, login-password, login-submit
//   apps:    apps-page, apps-table, app-row (data-app, data-role), app-link (data-app),
//            app-role, create-app-form, new-app-name, new-app-submit
//   secret:  secret-box, secret-key (its text is the key), copy-secret, secret-done
//   app:     app-page, app-details, app-role, app-created, key-hint, key-created, collections,
//            collection-row (data-collection), rotate-key, rotate-confirm, rotate-cancel (instance
//            owners), delete-app, delete-app-name, delete-app-confirm, delete-app-cancel
//   usage:   usage (data-range: hour or day), usage-range (the toggle; its buttons have
//            data-range and aria-pressed), usage-refresh, usage-requests-total,
//            usage-errors-total, usage-p99, usage-invocations-total, usage-connections,
//            usage-files, usage-file-bytes (each tile's data-value holds the raw number),
//            chart-requests, chart-p99, chart-invocations (the <svg>s)
//   tabs:    tab-overview, tab-data, tab-files, tab-functions, tab-queues, tab-users, tab-payments,
//            tab-realtime, tab-settings (users, payments and settings for developers and owners
//            only; the open one has aria-current="page")
//   data:    data-page, collection (data-collection), collection-link (data-collection), fields,
//            field-row (data-field), indexes, rule-list, rule-view, rule-create, rule-update,
//            rule-delete, edit-schema (data-collection; developers and owners)
//   schema:  the editor: new-collection-form (creating; with new-collection-name) or
//            schema-editor (data-collection), holding schema-fields, schema-field (data-field),
//            field-name, field-type, field-required, field-unique, field-constraint (data-key:
//            default, min_length, max_length, min, max, enum, collection; those of the type
//            shown), remove-field, add-field, schema-indexes, schema-index, index-fields,
//            index-unique, remove-index, add-index, rule-editor (data-rule), rule-mode
//            (data-rule; default, admin, everyone, when), rule-input (data-rule; aria-invalid
//            when wrong), rule-error (data-rule), rule-error-at (the <mark> on the character the
//            server pointed at; data-position, from 0), schema-problem (a problem not a rule's),
//            schema-check (data-valid, data-plan: the latest check's answer; neither while
//            checking), schema-force (the confirmation a plan that loses data needs),
//            schema-save, schema-cancel
//   records: collection-page, collection-name, filter-form, filter, sort, apply-filter,
//            records (data-page), record-row (data-id), record-id, record-field (data-field),
//            page-prev, page-next, page-number, edit-record, record-editor (data-id),
//            record-json, save-record, delete-record, delete-record-confirm,
//            delete-record-cancel, new-record-form, new-record, new-record-submit
//   files:   files-page, buckets, bucket-row (data-bucket), bucket-link (data-bucket),
//            bucket-page, bucket-details, files (data-page), file-row (data-id), file-preview,
//            file-link, files-prev, files-next, files-number, upload-form, upload-input,
//            upload-submit, delete-file, delete-file-confirm, delete-file-cancel (developers)
//   fns:     functions-page, functions, function-row (data-fn), function-link (data-fn),
//            function-version, function-triggers, new-function, new-function-form,
//            new-function-name, new-function-source, new-function-public, new-function-submit,
//            new-function-cancel (developers and owners), function-page, function-details,
//            function-active-version, function-source (data-file), edit-function, deploy-form,
//            deploy-file (several files only), deploy-source (data-file: the file shown),
//            deploy-timeout, deploy-memory, deploy-public, deploy-settings (the other settings
//            as JSON), deploy-submit, deploy-cancel, versions,
//            version-row (data-version, data-active), rollback (data-version), invoke-form,
//            invoke-event, invoke-submit, invoke-result, logs-section, logs-outcome (the filter:
//            empty for all), logs, log-row (data-id, data-outcome), logs-older, logs-refresh,
//            logs-follow (aria-pressed: while on, new entries that pass the filter come over
//            the console's socket and are put on top)
//   queues:  queues-page, queues, queues-refresh, queue-row (data-queue), queue-link
//            (data-queue), queue-ready, queue-in-flight, queue-delayed, queue-dead, queue-page,
//            queue-details, dead-letters, dead, dead-hidden (messages refused to the role),
//            dead-row (data-id), dead-error, replay (data-id), replay-all, purge-state, purge,
//            purge-confirm, purge-cancel
//   users:   users-page, user-search, user-search-submit, users, user-row (data-id), user-link,
//            users-prev, users-next, users-number, user-page, user-details, identities,
//            identity-row (data-provider), identity-subject, sessions,
//            session-row (data-id, data-revoked), revoke-session (data-id),
//            revoke-session-confirm, revoke-session-cancel, delete-user, delete-user-confirm,
//            delete-user-cancel
//   pay:     payments-page, orders-state, orders-user, orders-apply, orders, order-row (data-id,
//            data-state), order-link, pay-state, orders-prev, orders-next, orders-number,
//            callbacks, callback-row (data-id, data-outcome), callback-outcome, replay-callback,
//            reports, report-row (data-provider, data-date), show-report, reconcile-provider,
//            reconcile-date, reconcile-submit, report (data-provider, data-date), report-totals,
//            report-differences (data-value), differences, difference-row (data-kind)
//   order:   order-page, order-details (data-state), order-state, order-amount, order-refunded,
//            close-order(-confirm, -cancel), refunds, refund-row (data-id, data-state),
//            refund-form, refund-amount, refund-reason, refund(-confirm, -cancel), timeline,
//            event-row (data-name, data-source), callbacks as above
//   realtime: realtime-page, realtime-settings, realtime-kinds, kind-row (data-kind),
//            realtime-json, realtime-save, presence-channel, presence-submit, presence-count
//            (data-value), member-row (data-member), presence-prev, presence-next,
//            presence-number, send-section, send-target, send-to, send-data, send-submit,
//            sockets-section, sockets-count and sockets-users (data-value), socket-row
//            (data-socket), channels-section, channels-count (data-value), channel-row
//            (data-channel), watch-row, watch-section, watch-channel, watch-submit,
//            watched-channel (data-channel), unwatch, traffic, traffic-row (data-kind,
//            data-channel)
//   settings: settings-page, providers, provider-row (data-provider, data-enabled),
//            provider-secret-set, edit-provider (data-provider), provider-form (data-provider),
//            provider-input (data-field), provider-save, env, env-row (data-name),
//            delete-env(-confirm, -cancel), env-name, env-value, env-submit
//   people:  people-page, people-table, person-row (data-email, data-id), instance-role,
//            person-app-role (data-app, data-role), revoke-role (data-app), grant-app,
//            grant-role, grant-submit, delete-person, delete-person-confirm,
//            add-person-form, person-email, person-name, person-password, person-role,
//            person-submit
//   audit:   audit-page, audit-app (the app filter), audit-table, audit-row (data-seq),
//            audit-actor, audit-entry-app, audit-action, audit-status, audit-older

// ---------------------------------------------------------------------------------------------
// Words

const WORDS = {
  en: {
    'app.name': 'Cloudlet console',
    'nav.label': 'Main',
    'nav.apps': 'Apps',
    'nav.people': 'People',
    'nav.audit': 'Audit log',
    'header.logout': 'Log out',
    'header.language': 'Language',
    loading: 'Loading…',
    cancel: 'Cancel',
    retry: 'Try again',
    'err.network': 'The server could not be reached.',
    'err.code': 'code',
    'err.request': 'request',
    'notFound.title': 'Not found',
    'notFound.text': 'There is no such page.',
    'field.email': 'Email',
    'field.name': 'Name',
    'field.password': 'Password',
    'field.passwordHint': 'At least 8 characters, hard to guess (a few unusual words), not your email.',
    'login.title': 'Sign in',
    'login.submit': 'Sign in',
    'setup.title': 'Create the first owner',
    'setup.intro':
      'Nobody can sign in to this console yet. Create its first instance owner with the admin token the server was started with.',
    'setup.token': 'Admin token',
    'setup.submit': 'Create the owner and sign in',
    'role.owner': 'Owner',
    'role.developer': 'Developer',
    'role.viewer': 'Viewer',
    'role.member': 'Member',
    'apps.title': 'Apps',
    'apps.name': 'Name',
    'apps.role': 'Your role',
    'apps.created': 'Created',
    'apps.empty': 'No apps yet.',
    'apps.emptyMember': 'You have no role on any app yet. An instance owner can give you one.',
    'apps.create': 'Create an app',
    'apps.newName': 'App name',
    'apps.nameHint': '2 to 40 characters: a–z, 0–9 and -, starting and ending with a letter or digit.',
    'apps.badName': 'That is not a valid app name.',
    'apps.createSubmit': 'Create app',
    'secret.created': 'The secret key of {app}',
    'secret.rotated': 'The new secret key of {app}',
    'secret.warning':
      'This key is shown only once. Copy it now and keep it somewhere safe: whoever holds it can administer the app.',
    'secret.copy': 'Copy',
    'secret.copied': 'Copied.',
    'secret.copyFailed': 'Could not copy: the key is selected, press Ctrl+C (⌘C).',
    'secret.done': 'I have stored it',
    'app.back': 'All apps',
    'app.details': 'Details',
    'app.created': 'Created',
    'app.keyHint': 'Secret key starts with',
    'app.keyCreated': 'Key created',
    'app.collections': 'Collections',
    'app.collection': 'Collection',
    'app.fields': 'Fields',
    'app.noCollections': 'No collections yet.',
    'app.key': 'Secret key',
    'app.rotate': 'Rotate the secret key',
    'app.rotateWarning':
      'The current key stops working at once: everything that uses it needs the new one.',
    'app.rotateConfirm': 'Rotate now',
    'app.delete': 'Delete the app',
    'app.deleteSection': 'Delete',
    'app.deleteWarning':
      'This deletes the app with all its data and cannot be undone. Type the name of the app to confirm.',
    'app.deleteName': 'Name of the app',
    'app.deleteConfirm': 'Delete this app for ever',
    'people.title': 'People',
    'people.instanceRole': 'Instance role',
    'people.apps': 'Roles on apps',
    'people.setRole': 'Give a role',
    'people.actions': 'Actions',
    'people.none': 'None',
    'people.you': '(you)',
    'people.remove': 'Remove',
    'people.removeLabel': 'Remove the role on {app}',
    'people.grantApp': 'App',
    'people.grantRole': 'Role',
    'people.grant': 'Set',
    'people.noApps': 'No apps yet.',
    'people.delete': 'Delete',
    'people.deleteQuestion': 'Delete {email}?',
    'people.deleteYes': 'Yes, delete',
    'people.add': 'Add a person',
    'people.addSubmit': 'Add person',
    'people.added': '{email} was added.',
    'audit.title': 'Audit log',
    'audit.filter': 'App',
    'audit.allApps': 'All apps',
    'audit.seq': '#',
    'audit.at': 'Time',
    'audit.actor': 'Who',
    'audit.app': 'App',
    'audit.action': 'Action',
    'audit.status': 'Status',
    'audit.older': 'Older entries',
    'audit.empty': 'Nothing recorded yet.',
    refresh: 'Refresh',
    none: 'None',
    'err.json': 'That is not JSON: {message}',
    'err.object': 'Write a JSON object: { … }.',
    'app.sections': 'Sections of the app',
    'tab.overview': 'Overview',
    'tab.data': 'Data',
    'tab.functions': 'Functions',
    'tab.queues': 'Queues',
    'tab.files': 'Files',
    'files.buckets': 'Buckets',
    'files.none': 'No buckets yet: declare one with the admin API or in cloudlet.toml.',
    'files.all': 'All buckets',
    'files.bucket': 'Bucket',
    'files.types': 'Types',
    'files.max': 'Largest file',
    'files.thumbs': 'Thumbnail sizes',
    'files.noFiles': 'No files.',
    'files.size': 'Size',
    'files.owner': 'Owner',
    'files.upload': 'Upload a file',
    'files.send': 'Upload',
    'files.file': 'File',
    'files.uploadHint': 'Up to {size}. The type is read from the bytes.',
    'files.uploaded': 'File {name} uploaded.',
    'files.deleteQuestion': 'Delete this file?',
    'files.deleted': 'File {name} deleted.',
    'data.all': 'All collections',
    'data.version': 'version {version}',
    'data.field': 'Field',
    'data.type': 'Type',
    'data.constraints': 'Constraints',
    'data.indexes': 'Indexes',
    'rule.list': 'List rule',
    'rule.view': 'View rule',
    'rule.create': 'Create rule',
    'rule.update': 'Update rule',
    'rule.delete': 'Delete rule',
    'rule.everyone': 'Everyone',
    'rule.admin': 'Admins and the secret key only',
    'c.required': 'required',
    'c.unique': 'unique',
    'c.default': 'default',
    'c.min_length': 'min. length',
    'c.max_length': 'max. length',
    'c.min': 'min.',
    'c.max': 'max.',
    'c.enum': 'one of',
    'data.create': 'Create a collection',
    'data.name': 'Collection name',
    'data.nameHint': '1 to 40 characters: a–z, 0–9 and _, starting with a letter.',
    'data.createSubmit': 'Save the collection',
    'data.saved': 'Collection {name} saved.',
    'data.editSchema': 'Edit schema',
    'schema.fields': 'Fields',
    'schema.fieldName': 'Name',
    'schema.required': 'Required',
    'schema.unique': 'Unique',
    'schema.c.default': 'Default (JSON)',
    'schema.c.min_length': 'Min. length',
    'schema.c.max_length': 'Max. length',
    'schema.c.min': 'Min.',
    'schema.c.max': 'Max.',
    'schema.c.enum': 'One of',
    'schema.commas': 'comma-separated',
    'schema.c.collection': 'Target collection',
    'schema.removeField': 'Remove',
    'schema.removeFieldLabel': 'Remove the field {name}',
    'schema.addField': 'Add a field',
    'schema.indexFields': 'Fields (comma-separated)',
    'schema.removeIndex': 'Remove',
    'schema.addIndex': 'Add an index',
    'schema.indexesHint': 'Besides the built-in ones on (owner, created_at) and created_at.',
    'schema.rules': 'Rules',
    'schema.rulesHint': 'A condition is an expression of the filter language, such as owner = @auth.id.',
    'schema.defaultRules': 'Default: only the owner of a record may list, view, update and delete it; any logged-in user may create.',
    'schema.condition': '{rule}: condition',
    'rule.mode.default': 'Default',
    'rule.mode.admin': 'Only admins',
    'rule.mode.everyone': 'Everyone',
    'rule.mode.when': 'When…',
    'schema.emptyRule': 'Write a condition, or choose Everyone.',
    'schema.badDefault': 'The default of {field} is not JSON: {message}',
    'schema.badNumber': '{what} of {field} is not a valid number.',
    'schema.badEnum': 'The allowed values of {field} must be numbers.',
    'schema.goTo': 'Put the cursor there',
    'schema.checking': 'Checking…',
    'schema.needName': 'Type a name to check the collection.',
    'schema.plan.create': 'Valid: saving creates the collection.',
    'schema.plan.alter': 'Valid: saving changes the collection.',
    'schema.plan.destroy': 'Changes that lose data: saving needs confirmation.',
    'schema.plan.unchanged': 'Valid: no change.',
    'schema.invalid': 'Not valid yet: see the problem marked.',
    'schema.failed': 'Could not check it.',
    'schema.force': 'I understand that the data of removed or retyped fields will be lost.',
    'schema.confirmFirst': 'These changes lose data: tick the box to confirm them first.',
    'schema.save': 'Save the schema',
    'data.filter': 'Filter',
    'data.sort': 'Sort',
    'data.apply': 'Apply',
    'data.prev': 'Previous',
    'data.next': 'Next',
    'data.page': 'Page {page}',
    'data.noRecords': 'No records.',
    'data.created': 'Created',
    'data.updated': 'Updated',
    'data.edit': 'Edit',
    'data.editLabel': 'Fields of {id} (JSON)',
    'data.save': 'Save',
    'data.delete': 'Delete',
    'data.deleteQuestion': 'Delete this record?',
    'data.deleteYes': 'Yes, delete',
    'data.recordSaved': 'Record {id} saved.',
    'data.recordDeleted': 'Record {id} deleted.',
    'data.recordCreated': 'Record {id} created.',
    'data.newRecord': 'New record',
    'data.recordJson': 'Its fields (JSON)',
    'data.createRecord': 'Create the record',
    'fn.all': 'All functions',
    'fn.none': 'No functions yet.',
    'fn.name': 'Function',
    'fn.version': 'Version',
    'fn.triggers': 'Triggers',
    'fn.callsOnly': 'Calls only',
    'fn.updated': 'Deployed',
    'fn.public': 'Public',
    'fn.private': 'Logged-in users only',
    'fn.access': 'Callable by',
    'fn.limits': 'Limits',
    'fn.limitsValue': '{ms} ms, {mb} MB',
    'fn.source': 'Source of version {version}',
    'fn.entry': 'entry',
    'fn.versions': 'Versions',
    'fn.deployed': 'Deployed',
    'fn.active': 'Active',
    'fn.rollback': 'Roll back to this',
    'fn.rolledBack': 'Version {version} is the active one now.',
    'fn.invoke': 'Invoke',
    'fn.event': 'Event (JSON)',
    'fn.eventHint': 'The function runs as the admin: ctx.auth is {"admin": true}.',
    'fn.invokeSubmit': 'Invoke',
    'fn.result': 'Result',
    'fn.logs': 'Latest logs',
    'fn.noLogs': 'No invocations yet.',
    'fn.follow': 'Follow',
    'fn.following': 'Following',
    'fn.at': 'Time',
    'fn.trigger': 'Trigger',
    'fn.outcome': 'Outcome',
    'fn.duration': 'Duration',
    'fn.output': 'Output',
    'fn.edit': 'Edit and deploy',
    'fn.fromVersion': 'from version {version}',
    'fn.file': 'File',
    'fn.sourceField': 'Source',
    'fn.timeout': 'Time limit (ms)',
    'fn.memory': 'Memory limit (MB)',
    'fn.publicLabel': 'Public: callable without logging in',
    'fn.settingsJson': 'Triggers, schedules and concurrency (JSON)',
    'fn.settingsHint': 'As the active version has them: "triggers", "schedules" and "max_concurrency" (see the functions docs).',
    'fn.settingsKeys': 'Only "triggers", "schedules" and "max_concurrency" go here, not: {keys}',
    'fn.deploy': 'Deploy',
    'fn.deployedVersion': 'Version {version} is deployed and active.',
    'fn.new': 'New function',
    'fn.newName': 'Name',
    'fn.nameHint': '1 to 40 characters: a–z, 0–9, _ and -, starting with a letter.',
    'fn.badName': 'That is not a valid function name.',
    'fn.exists': 'There is a function named {name} already: open it to deploy a new version.',
    'fn.created': 'Function {name} is deployed (version {version}).',
    'fn.logOutcome': 'Show',
    'fn.allOutcomes': 'All outcomes',
    'fn.o.ok': 'OK',
    'fn.o.error': 'Errors',
    'fn.o.timeout': 'Timed out',
    'fn.o.memory_limit': 'Out of memory',
    'fn.o.result_too_large': 'Result too large',
    'fn.noMatchingLogs': 'No invocations with this outcome.',
    'fn.older': 'Older entries',
    'q.title': 'Queues',
    'q.all': 'All queues',
    'q.none': 'No queues yet.',
    'q.name': 'Queue',
    'q.ready': 'Ready',
    'q.inFlight': 'In flight',
    'q.delayed': 'Delayed',
    'q.dead': 'Dead letters',
    'q.attempts': 'Attempts',
    'q.visibility': 'Visibility timeout',
    'q.retention': 'Kept for',
    'q.seconds': '{n} s',
    'q.deadLetters': 'Dead letters',
    'q.noDead': 'No dead letters.',
    'q.deadHidden': 'Your role on this app does not show queued messages: they carry what its users sent.',
    'q.message': 'Message',
    'q.lastError': 'Last error',
    'q.sent': 'Sent',
    'q.payload': 'Payload',
    'q.replay': 'Replay',
    'q.replayAll': 'Replay all',
    'q.replayed': '{n} dead letters back in the queue.',
    'q.purge': 'Purge',
    'q.purgeWhich': 'Messages',
    'q.purge.dead': 'Dead letters',
    'q.purge.waiting': 'Waiting',
    'q.purge.all': 'All',
    'q.purgeQuestion': 'Delete these messages for ever?',
    'q.purgeYes': 'Yes, purge',
    'q.purged': '{n} messages deleted.',
    'tab.users': 'Users',
    'usage.title': 'Traffic',
    'usage.range': 'Period',
    'usage.hour': 'Last hour',
    'usage.day': 'Last day',
    'usage.requests': 'Requests',
    'usage.errors': 'Server errors',
    'usage.clientErrors': 'Client errors (4xx)',
    'usage.clientErrorsHint': '{n} client errors (4xx)',
    'usage.p99': 'p99 latency, highest',
    'usage.invocations': 'Function invocations',
    'usage.connections': 'Realtime connections',
    'usage.openNow': 'open now',
    'usage.files': 'Files',
    'usage.note': 'As counted by the server that answered, since it started.',
    'usage.chartRequests': 'Requests and errors',
    'usage.chartP99': 'p99 latency',
    'usage.chartInvocations': 'Invocations',
    'usage.max': 'max {value}',
    'usage.barRequests': '{time}: {requests} requests, {client} client errors, {errors} server errors',
    'usage.barP99': '{time}: p99 {value}',
    'usage.barInvocations': '{time}: {n} invocations',
    'usage.over2s': '> 2 s',
    'unit.ms': '{n} ms',
    'unit.s': '{n} s',
    'users.title': 'Users',
    'users.all': 'All users',
    'users.search': 'Search',
    'users.searchHint': 'An id, email, phone number, openid or unionid, exactly.',
    'users.id': 'User',
    'users.phone': 'Phone',
    'users.profile': 'Profile',
    'users.lastLogin': 'Last login',
    'users.none': 'No users yet.',
    'users.noMatch': 'No user matches.',
    'users.identities': 'Login identities',
    'users.provider': 'Provider',
    'users.subject': 'Id at the provider',
    'users.linked': 'Linked',
    'users.noIdentities': 'No identities.',
    'users.sessions': 'Sessions',
    'users.session': 'Session',
    'users.refreshed': 'Refreshed',
    'users.expires': 'Expires',
    'users.state': 'State',
    'users.live': 'Active',
    'users.revoked': 'Revoked',
    'users.expired': 'Expired',
    'users.noSessions': 'No sessions.',
    'users.revoke': 'Revoke',
    'users.revokeQuestion': 'End this session?',
    'users.revokeYes': 'Yes, revoke',
    'users.revokedNotice': 'Session revoked: its tokens stop working at once.',
    'users.delete': 'Delete the user',
    'users.deleteWarning': 'This deletes the user with their identities, sessions and files. It cannot be undone.',
    'users.deleteQuestion': 'Delete this user for ever?',
    'users.deleteYes': 'Yes, delete',
    'users.deleted': 'User {id} deleted.',
    'tab.payments': 'Payments',
    'tab.realtime': 'Realtime',
    'tab.settings': 'Settings',
    show: 'Show',
    kind: 'Kind',
    yes: 'Yes',
    no: 'No',
    done: 'Done.',
    sure: 'Are you sure?',
    'set.notSet': 'Not set',
    'ps.created': 'Unpaid',
    'ps.paid': 'Paid',
    'ps.partly_refunded': 'Partly refunded',
    'ps.refunded': 'Refunded',
    'ps.closed': 'Closed',
    'ps.pending': 'Pending',
    'ps.succeeded': 'Succeeded',
    'ps.failed': 'Failed',
    'pay.orders': 'Orders',
    'pay.allStates': 'All states',
    'pay.order': 'Order',
    'pay.amount': 'Amount',
    'pay.description': 'Description',
    'pay.provider': 'Provider',
    'pay.tradeNo': 'Merchant order no.',
    'pay.transaction': 'Platform transaction',
    'pay.metadata': 'Metadata',
    'pay.timeline': 'Timeline',
    'pay.event': 'Event',
    'pay.source': 'Source',
    'pay.note': 'admin note',
    'pay.refunds': 'Refunds',
    'pay.refundNo': 'Refund no.',
    'pay.reason': 'Reason',
    'pay.refund': 'Refund',
    'pay.close': 'Close the order',
    'pay.callbacks': 'Callbacks',
    'pay.handled': 'Handled',
    'pay.reports': 'Reconciliation',
    'pay.day': 'Day',
    'pay.differences': 'Differences',
    'pay.checked': 'Checked',
    'pay.compare': 'Compare a day',
    'pay.compareHint': 'A day (China time) before today, within three months.',
    'pay.bill': 'The bill',
    'pay.here': 'Here',
    'pay.noBill': 'The platform had no bill for that day.',
    'rt.kept': '{count} messages, {secs} s',
    'rt.kinds': 'Kinds of channel',
    'rt.join': 'Join',
    'rt.publish': 'Publish',
    'rt.presence': 'Presence',
    'rt.json': 'Settings (JSON)',
    'rt.jsonHint': 'Replaces all the settings: see the realtime docs.',
    'rt.channel': 'Channel',
    'rt.channelHint': 'kind or kind:key, such as room:42',
    'rt.count': '{n} present',
    'rt.member': 'Member',
    'rt.send': 'Send',
    'rt.to': 'To',
    'rt.data': 'Data (JSON)',
    'rt.sockets': 'Open sockets',
    'rt.channels': 'Live channels',
    'rt.channelsNow': '{n} channels',
    'rt.subscribers': 'Subscribers',
    'rt.presentNow': 'Present',
    'rt.lastSeq': 'Messages',
    'rt.socketsNow': 'Sockets:',
    'rt.usersNow': 'users:',
    'rt.socket': 'Socket',
    'rt.caller': 'Opened by',
    'rt.caller.user': 'a user',
    'rt.caller.anonymous': 'anonymous',
    'rt.caller.server': 'the server side',
    'rt.opened': 'Opened',
    'rt.subscriptions': 'Subscriptions',
    'rt.watch': 'Watch a channel',
    'rt.watchHint': 'Its messages and presence changes as they happen, as its subscribers get them. Watching does not make you present; it is noted in the audit log.',
    'rt.watchButton': 'Watch',
    'rt.unwatch': 'Stop watching',
    'rt.from': 'From',
    'rt.socketClosed': 'The live connection closed: reload the page.',
    'set.schedules': 'Schedules',
    'set.schedulesHint': "Set by each function's deploy (its schedules); times in the schedule's time zone.",
    'set.noSchedules': 'No function has a schedule.',
    'set.cron': 'Cron',
    'set.timezone': 'Time zone',
    'set.limits': 'Limits',
    'set.limitsHint': "The instance's, the same for every app: change them in the server's configuration.",
    'set.limit': 'Limit',
    'set.value': 'Value',
    'set.unlimited': 'no limit',
    'lim.body': 'Largest request body',
    'lim.perAddress': 'Connections per client address',
    'lim.token': 'Access token lifetime',
    'lim.session': 'Session lifetime',
    'lim.days': '{n} days',
    'lim.loginsIp': 'Logins per address per minute',
    'lim.loginsApp': 'Logins per app per minute',
    'lim.passwords': 'Wrong passwords per account per minute',
    'lim.timeout': 'Function time (default / most)',
    'lim.memory': 'Function memory (default / most)',
    'lim.concurrent': 'Invocations at once',
    'lim.logs': 'Log entries kept',
    'lim.appFiles': 'Files per app (bytes · files)',
    'lim.userFiles': 'Files per user (bytes · files)',
    'lim.sockets': 'Realtime sockets per app',
    'lim.userSockets': 'Realtime sockets per user',
    'lim.queue': 'Queue message size · queues',
    'p.wechat': 'WeChat',
    'p.qq': 'QQ',
    'p.douyin': 'Douyin',
    'p.alipay': 'Alipay',
    'p.password': 'Password',
    'p.anonymous': 'Anonymous',
    'p.dev': 'Dev login',
    'set.providers': 'Login providers',
    'set.ownersOnly': 'Owners only.',
    'set.enabled': 'Enabled',
    'set.secret': 'Secret',
    'set.isSet': 'Set',
    'set.appid': 'App id',
    'set.privateKey': "The app's private key",
    'set.publicKey': "Alipay's public key",
    'set.baseUrl': 'API address',
    'set.secretHint': 'Write-only: give it on every save.',
    'env.title': 'Function environment',
    'env.hint': 'Functions read them as ctx.env.NAME.',
    'env.name': 'Name',
    'env.nameHint': 'A–Z, 0–9 and _, not starting with a digit.',
    'env.value': 'Value',
  },
  'zh-CN': {
    'app.name': 'Cloudlet 控制台',
    'nav.label': '主导航',
    'nav.apps': '应用',
    'nav.people': '人员',
    'nav.audit': '审计日志',
    'header.logout': '退出登录',
    'header.language': '语言',
    loading: '加载中…',
    cancel: '取消',
    retry: '重试',
    'err.network': '无法连接到服务器。',
    'err.code': '错误代码',
    'err.request': '请求',
    'notFound.title': '未找到',
    'notFound.text': '没有这个页面。',
    'field.email': '邮箱',
    'field.name': '姓名',
    'field.password': '密码',
    'field.passwordHint': '至少 8 个字符，难以猜测（几个不常见的词），不能包含邮箱。',
    'login.title': '登录',
    'login.submit': '登录',
    'setup.title': '创建第一位所有者',
    'setup.intro': '目前还没有人能登录此控制台。请使用启动服务器时设置的管理员令牌，创建第一位实例所有者。',
    'setup.token': '管理员令牌',
    'setup.submit': '创建所有者并登录',
    'role.owner': '所有者',
    'role.developer': '开发者',
    'role.viewer': '查看者',
    'role.member': '成员',
    'apps.title': '应用',
    'apps.name': '名称',
    'apps.role': '你的角色',
    'apps.created': '创建时间',
    'apps.empty': '还没有应用。',
    'apps.emptyMember': '你还没有任何应用的角色，实例所有者可以为你分配。',
    'apps.create': '创建应用',
    'apps.newName': '应用名称',
    'apps.nameHint': '2 到 40 个字符：a–z、0–9 和 -，以字母或数字开头和结尾。',
    'apps.badName': '应用名称不符合要求。',
    'apps.createSubmit': '创建应用',
    'secret.created': '{app} 的密钥',
    'secret.rotated': '{app} 的新密钥',
    'secret.warning': '此密钥只显示这一次。请立即复制并妥善保存：持有它的人可以管理该应用。',
    'secret.copy': '复制',
    'secret.copied': '已复制。',
    'secret.copyFailed': '无法自动复制：密钥已选中，请按 Ctrl+C（⌘C）。',
    'secret.done': '我已保存',
    'app.back': '全部应用',
    'app.details': '详情',
    'app.created': '创建时间',
    'app.keyHint': '密钥开头',
    'app.keyCreated': '密钥创建时间',
    'app.collections': '集合',
    'app.collection': '集合',
    'app.fields': '字段数',
    'app.noCollections': '还没有集合。',
    'app.key': '密钥',
    'app.rotate': '轮换密钥',
    'app.rotateWarning': '当前密钥会立即失效：所有使用它的地方都需要换成新密钥。',
    'app.rotateConfirm': '立即轮换',
    'app.delete': '删除应用',
    'app.deleteSection': '删除',
    'app.deleteWarning': '这会删除该应用及其全部数据，且无法撤销。请输入应用名称以确认。',
    'app.deleteName': '应用名称',
    'app.deleteConfirm': '永久删除此应用',
    'people.title': '人员',
    'people.instanceRole': '实例角色',
    'people.apps': '应用角色',
    'people.setRole': '分配角色',
    'people.actions': '操作',
    'people.none': '无',
    'people.you': '（你）',
    'people.remove': '移除',
    'people.removeLabel': '移除在 {app} 上的角色',
    'people.grantApp': '应用',
    'people.grantRole': '角色',
    'people.grant': '设置',
    'people.noApps': '还没有应用。',
    'people.delete': '删除',
    'people.deleteQuestion': '确定删除 {email}？',
    'people.deleteYes': '确定删除',
    'people.add': '添加人员',
    'people.addSubmit': '添加',
    'people.added': '已添加 {email}。',
    'audit.title': '审计日志',
    'audit.filter': '应用',
    'audit.allApps': '全部应用',
    'audit.seq': '序号',
    'audit.at': '时间',
    'audit.actor': '操作者',
    'audit.app': '应用',
    'audit.action': '操作',
    'audit.status': '状态',
    'audit.older': '更早的记录',
    'audit.empty': '还没有记录。',
    refresh: '刷新',
    none: '无',
    'err.json': '这不是有效的 JSON：{message}',
    'err.object': '请输入一个 JSON 对象：{ … }。',
    'app.sections': '应用的各部分',
    'tab.overview': '概览',
    'tab.data': '数据',
    'tab.functions': '云函数',
    'tab.queues': '队列',
    'tab.files': '文件',
    'files.buckets': '存储桶',
    'files.none': '还没有存储桶：可通过管理 API 或 cloudlet.toml 声明。',
    'files.all': '全部存储桶',
    'files.bucket': '存储桶',
    'files.types': '类型',
    'files.max': '单个文件上限',
    'files.thumbs': '缩略图尺寸',
    'files.noFiles': '没有文件。',
    'files.size': '大小',
    'files.owner': '所有者',
    'files.upload': '上传文件',
    'files.send': '上传',
    'files.file': '文件',
    'files.uploadHint': '最大 {size}。类型按文件内容判断。',
    'files.uploaded': '已上传文件 {name}。',
    'files.deleteQuestion': '确定删除这个文件？',
    'files.deleted': '已删除文件 {name}。',
    'data.all': '全部集合',
    'data.version': '版本 {version}',
    'data.field': '字段',
    'data.type': '类型',
    'data.constraints': '约束',
    'data.indexes': '索引',
    'rule.list': '列表规则',
    'rule.view': '查看规则',
    'rule.create': '创建规则',
    'rule.update': '更新规则',
    'rule.delete': '删除规则',
    'rule.everyone': '所有人',
    'rule.admin': '仅管理员和密钥',
    'c.required': '必填',
    'c.unique': '唯一',
    'c.default': '默认值',
    'c.min_length': '最短',
    'c.max_length': '最长',
    'c.min': '最小',
    'c.max': '最大',
    'c.enum': '可选值',
    'data.create': '创建集合',
    'data.name': '集合名称',
    'data.nameHint': '1 到 40 个字符：a–z、0–9 和 _，以字母开头。',
    'data.createSubmit': '保存集合',
    'data.saved': '已保存集合 {name}。',
    'data.editSchema': '编辑结构',
    'schema.fields': '字段',
    'schema.fieldName': '名称',
    'schema.required': '必填',
    'schema.unique': '唯一',
    'schema.c.default': '默认值（JSON）',
    'schema.c.min_length': '最短长度',
    'schema.c.max_length': '最长长度',
    'schema.c.min': '最小值',
    'schema.c.max': '最大值',
    'schema.c.enum': '可选值',
    'schema.commas': '逗号分隔',
    'schema.c.collection': '关联的集合',
    'schema.removeField': '移除',
    'schema.removeFieldLabel': '移除字段 {name}',
    'schema.addField': '添加字段',
    'schema.indexFields': '字段（逗号分隔）',
    'schema.removeIndex': '移除',
    'schema.addIndex': '添加索引',
    'schema.indexesHint': '(owner, created_at) 和 created_at 上的内置索引之外的索引。',
    'schema.rules': '规则',
    'schema.rulesHint': '条件用筛选语言书写，例如 owner = @auth.id。',
    'schema.defaultRules': '默认：只有记录的所有者可以列出、查看、更新和删除它；任何已登录的用户都可以创建。',
    'schema.condition': '{rule}：条件',
    'rule.mode.default': '默认',
    'rule.mode.admin': '仅管理员',
    'rule.mode.everyone': '所有人',
    'rule.mode.when': '满足条件时…',
    'schema.emptyRule': '请填写条件，或选择“所有人”。',
    'schema.badDefault': '字段 {field} 的默认值不是有效的 JSON：{message}',
    'schema.badNumber': '字段 {field} 的{what}不是有效的数字。',
    'schema.badEnum': '字段 {field} 的可选值必须是数字。',
    'schema.goTo': '把光标移到这里',
    'schema.checking': '正在检查…',
    'schema.needName': '填写名称后即可检查集合。',
    'schema.plan.create': '有效：保存后将创建集合。',
    'schema.plan.alter': '有效：保存后将修改集合。',
    'schema.plan.destroy': '这些修改会丢失数据：保存前需要确认。',
    'schema.plan.unchanged': '有效：没有改动。',
    'schema.invalid': '还不能保存：请查看标出的问题。',
    'schema.failed': '无法检查。',
    'schema.force': '我明白：被移除或改了类型的字段，其数据将会丢失。',
    'schema.confirmFirst': '这些修改会丢失数据：请先勾选确认。',
    'schema.save': '保存结构',
    'data.filter': '筛选',
    'data.sort': '排序',
    'data.apply': '应用',
    'data.prev': '上一页',
    'data.next': '下一页',
    'data.page': '第 {page} 页',
    'data.noRecords': '没有记录。',
    'data.created': '创建时间',
    'data.updated': '更新时间',
    'data.edit': '编辑',
    'data.editLabel': '{id} 的字段（JSON）',
    'data.save': '保存',
    'data.delete': '删除',
    'data.deleteQuestion': '确定删除这条记录？',
    'data.deleteYes': '确定删除',
    'data.recordSaved': '已保存记录 {id}。',
    'data.recordDeleted': '已删除记录 {id}。',
    'data.recordCreated': '已创建记录 {id}。',
    'data.newRecord': '新建记录',
    'data.recordJson': '字段（JSON）',
    'data.createRecord': '创建记录',
    'fn.all': '全部云函数',
    'fn.none': '还没有云函数。',
    'fn.name': '云函数',
    'fn.version': '版本',
    'fn.triggers': '触发器',
    'fn.callsOnly': '仅调用',
    'fn.updated': '部署时间',
    'fn.public': '公开',
    'fn.private': '仅登录用户',
    'fn.access': '可调用者',
    'fn.limits': '限制',
    'fn.limitsValue': '{ms} 毫秒，{mb} MB',
    'fn.source': '版本 {version} 的源代码',
    'fn.entry': '入口',
    'fn.versions': '版本',
    'fn.deployed': '部署时间',
    'fn.active': '当前版本',
    'fn.rollback': '回滚到此版本',
    'fn.rolledBack': '版本 {version} 现在是当前版本。',
    'fn.invoke': '调用',
    'fn.event': '事件（JSON）',
    'fn.eventHint': '以管理员身份运行：ctx.auth 为 {"admin": true}。',
    'fn.invokeSubmit': '调用',
    'fn.result': '结果',
    'fn.logs': '最近日志',
    'fn.noLogs': '还没有调用记录。',
    'fn.follow': '实时跟踪',
    'fn.following': '跟踪中',
    'fn.at': '时间',
    'fn.trigger': '触发方式',
    'fn.outcome': '结果',
    'fn.duration': '耗时',
    'fn.output': '输出',
    'fn.edit': '编辑并部署',
    'fn.fromVersion': '基于版本 {version}',
    'fn.file': '文件',
    'fn.sourceField': '源代码',
    'fn.timeout': '超时（毫秒）',
    'fn.memory': '内存上限（MB）',
    'fn.publicLabel': '公开：无需登录即可调用',
    'fn.settingsJson': '触发器、定时任务与并发（JSON）',
    'fn.settingsHint': '当前版本的 "triggers"、"schedules" 和 "max_concurrency"（详见云函数文档）。',
    'fn.settingsKeys': '这里只能填写 "triggers"、"schedules" 和 "max_concurrency"，不能包含：{keys}',
    'fn.deploy': '部署',
    'fn.deployedVersion': '版本 {version} 已部署，现在是当前版本。',
    'fn.new': '新建云函数',
    'fn.newName': '名称',
    'fn.nameHint': '1 到 40 个字符：a–z、0–9、_ 和 -，以字母开头。',
    'fn.badName': '这不是有效的云函数名称。',
    'fn.exists': '已有名为 {name} 的云函数：请打开它来部署新版本。',
    'fn.created': '云函数 {name} 已部署（版本 {version}）。',
    'fn.logOutcome': '显示',
    'fn.allOutcomes': '全部结果',
    'fn.o.ok': '成功',
    'fn.o.error': '出错',
    'fn.o.timeout': '超时',
    'fn.o.memory_limit': '内存超限',
    'fn.o.result_too_large': '结果过大',
    'fn.noMatchingLogs': '没有这种结果的调用记录。',
    'fn.older': '更早的记录',
    'q.title': '队列',
    'q.all': '全部队列',
    'q.none': '还没有队列。',
    'q.name': '队列',
    'q.ready': '待投递',
    'q.inFlight': '投递中',
    'q.delayed': '延迟',
    'q.dead': '死信',
    'q.attempts': '尝试次数',
    'q.visibility': '可见性超时',
    'q.retention': '保留时间',
    'q.seconds': '{n} 秒',
    'q.deadLetters': '死信',
    'q.noDead': '没有死信。',
    'q.deadHidden': '你在此应用的角色不能查看队列中的消息：其中有用户发送的内容。',
    'q.message': '消息',
    'q.lastError': '最后的错误',
    'q.sent': '发送时间',
    'q.payload': '内容',
    'q.replay': '重新投递',
    'q.replayAll': '全部重新投递',
    'q.replayed': '{n} 条死信已回到队列。',
    'q.purge': '清空',
    'q.purgeWhich': '消息',
    'q.purge.dead': '死信',
    'q.purge.waiting': '等待中',
    'q.purge.all': '全部',
    'q.purgeQuestion': '永久删除这些消息？',
    'q.purgeYes': '确定清空',
    'q.purged': '已删除 {n} 条消息。',
    'tab.users': '用户',
    'usage.title': '流量',
    'usage.range': '时间范围',
    'usage.hour': '最近一小时',
    'usage.day': '最近一天',
    'usage.requests': '请求',
    'usage.errors': '服务器错误',
    'usage.clientErrors': '客户端错误（4xx）',
    'usage.clientErrorsHint': '{n} 个客户端错误（4xx）',
    'usage.p99': 'p99 延迟（最高）',
    'usage.invocations': '云函数调用',
    'usage.connections': '实时连接',
    'usage.openNow': '当前打开',
    'usage.files': '文件',
    'usage.note': '由响应请求的服务器统计，自其启动以来。',
    'usage.chartRequests': '请求与错误',
    'usage.chartP99': 'p99 延迟',
    'usage.chartInvocations': '调用次数',
    'usage.max': '最大 {value}',
    'usage.barRequests': '{time}：{requests} 个请求，{client} 个客户端错误，{errors} 个服务器错误',
    'usage.barP99': '{time}：p99 {value}',
    'usage.barInvocations': '{time}：{n} 次调用',
    'usage.over2s': '> 2 秒',
    'unit.ms': '{n} 毫秒',
    'unit.s': '{n} 秒',
    'users.title': '用户',
    'users.all': '全部用户',
    'users.search': '搜索',
    'users.searchHint': '完整的 ID、邮箱、手机号、openid 或 unionid。',
    'users.id': '用户',
    'users.phone': '手机号',
    'users.profile': '资料',
    'users.lastLogin': '最近登录',
    'users.none': '还没有用户。',
    'users.noMatch': '没有匹配的用户。',
    'users.identities': '登录身份',
    'users.provider': '登录方式',
    'users.subject': '在该平台的 ID',
    'users.linked': '关联时间',
    'users.noIdentities': '没有登录身份。',
    'users.sessions': '会话',
    'users.session': '会话',
    'users.refreshed': '刷新时间',
    'users.expires': '过期时间',
    'users.state': '状态',
    'users.live': '有效',
    'users.revoked': '已撤销',
    'users.expired': '已过期',
    'users.noSessions': '没有会话。',
    'users.revoke': '撤销',
    'users.revokeQuestion': '结束这个会话？',
    'users.revokeYes': '确定撤销',
    'users.revokedNotice': '会话已撤销：其令牌立即失效。',
    'users.delete': '删除用户',
    'users.deleteWarning': '这会删除该用户及其登录身份、会话和文件，且无法撤销。',
    'users.deleteQuestion': '永久删除这个用户？',
    'users.deleteYes': '确定删除',
    'users.deleted': '已删除用户 {id}。',
    'tab.payments': '支付',
    'tab.realtime': '实时',
    'tab.settings': '设置',
    show: '查看',
    kind: '类型',
    yes: '是',
    no: '否',
    done: '完成。',
    sure: '确定吗？',
    'set.notSet': '未设置',
    'ps.created': '待支付',
    'ps.paid': '已支付',
    'ps.partly_refunded': '部分退款',
    'ps.refunded': '已退款',
    'ps.closed': '已关闭',
    'ps.pending': '处理中',
    'ps.succeeded': '成功',
    'ps.failed': '失败',
    'pay.orders': '订单',
    'pay.allStates': '全部状态',
    'pay.order': '订单',
    'pay.amount': '金额',
    'pay.description': '描述',
    'pay.provider': '支付渠道',
    'pay.tradeNo': '商户订单号',
    'pay.transaction': '平台交易号',
    'pay.metadata': '附加数据',
    'pay.timeline': '时间线',
    'pay.event': '事件',
    'pay.source': '来源',
    'pay.note': '管理员记录',
    'pay.refunds': '退款',
    'pay.refundNo': '退款单号',
    'pay.reason': '原因',
    'pay.refund': '退款',
    'pay.close': '关闭订单',
    'pay.callbacks': '支付通知',
    'pay.handled': '处理次数',
    'pay.reports': '对账',
    'pay.day': '日期',
    'pay.differences': '差异',
    'pay.checked': '核对时间',
    'pay.compare': '核对某一天',
    'pay.compareHint': '今天之前三个月内的一天（北京时间）。',
    'pay.bill': '平台账单',
    'pay.here': '本地',
    'pay.noBill': '平台当天没有账单。',
    'rt.kept': '{count} 条，{secs} 秒',
    'rt.kinds': '频道类型',
    'rt.join': '加入',
    'rt.publish': '发布',
    'rt.presence': '在线状态',
    'rt.json': '设置（JSON）',
    'rt.jsonHint': '替换全部设置：见实时文档。',
    'rt.channel': '频道',
    'rt.channelHint': 'kind 或 kind:key，例如 room:42',
    'rt.count': '{n} 人在线',
    'rt.member': '成员',
    'rt.send': '发送',
    'rt.to': '发送给',
    'rt.data': '数据（JSON）',
    'rt.sockets': '打开的连接',
    'rt.channels': '活跃频道',
    'rt.channelsNow': '{n} 个频道',
    'rt.subscribers': '订阅者',
    'rt.presentNow': '在线',
    'rt.lastSeq': '消息数',
    'rt.socketsNow': '连接：',
    'rt.usersNow': '用户：',
    'rt.socket': '连接',
    'rt.caller': '打开者',
    'rt.caller.user': '用户',
    'rt.caller.anonymous': '匿名',
    'rt.caller.server': '服务端',
    'rt.opened': '打开时间',
    'rt.subscriptions': '订阅数',
    'rt.watch': '监听频道',
    'rt.watchHint': '实时查看频道的消息和在线变化，与订阅者收到的一样。监听不会让你出现在在线列表中；监听会记入审计日志。',
    'rt.watchButton': '监听',
    'rt.unwatch': '停止监听',
    'rt.from': '发送者',
    'rt.socketClosed': '实时连接已断开：请刷新页面。',
    'set.schedules': '定时任务',
    'set.schedulesHint': '由各函数部署时的 schedules 设定；时间按该任务的时区。',
    'set.noSchedules': '没有函数设定了定时任务。',
    'set.cron': 'Cron',
    'set.timezone': '时区',
    'set.limits': '限制',
    'set.limitsHint': '实例级限制，所有应用相同：在服务器配置中修改。',
    'set.limit': '限制项',
    'set.value': '值',
    'set.unlimited': '不限',
    'lim.body': '请求体上限',
    'lim.perAddress': '每个客户端地址的连接数',
    'lim.token': '访问令牌有效期',
    'lim.session': '会话有效期',
    'lim.days': '{n} 天',
    'lim.loginsIp': '每个地址每分钟登录次数',
    'lim.loginsApp': '每个应用每分钟登录次数',
    'lim.passwords': '每个账号每分钟密码错误次数',
    'lim.timeout': '函数时长（默认 / 上限）',
    'lim.memory': '函数内存（默认 / 上限）',
    'lim.concurrent': '同时调用数',
    'lim.logs': '保留的日志条数',
    'lim.appFiles': '每个应用的文件（字节 · 个数）',
    'lim.userFiles': '每个用户的文件（字节 · 个数）',
    'lim.sockets': '每个应用的实时连接',
    'lim.userSockets': '每个用户的实时连接',
    'lim.queue': '队列消息大小 · 队列数',
    'p.wechat': '微信',
    'p.qq': 'QQ',
    'p.douyin': '抖音',
    'p.alipay': '支付宝',
    'p.password': '密码',
    'p.anonymous': '匿名',
    'p.dev': '开发登录',
    'set.providers': '登录方式',
    'set.ownersOnly': '仅限所有者。',
    'set.enabled': '启用',
    'set.secret': '密钥',
    'set.isSet': '已设置',
    'set.appid': 'AppID',
    'set.privateKey': '应用私钥',
    'set.publicKey': '支付宝公钥',
    'set.baseUrl': '接口地址',
    'set.secretHint': '只写：每次保存都要填写。',
    'env.title': '云函数环境变量',
    'env.hint': '云函数通过 ctx.env.NAME 读取。',
    'env.name': '名称',
    'env.nameHint': 'A–Z、0–9 和 _，不以数字开头。',
    'env.value': '值',
  },
};

/** Each language named in itself, as language pickers do (so not translated). */
const LANGUAGE_NAMES = { en: 'English', 'zh-CN': '中文' };
const LANG_KEY = 'cloudlet.console.lang';
const APP_ROLES = ['owner', 'developer', 'viewer'];
const INSTANCE_ROLES = ['member', 'owner'];
const APP_NAME = /^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$/;

let lang = initialLanguage();

function initialLanguage() {
  let saved = null;
  try {
    saved = localStorage.getItem(LANG_KEY);
  } catch {
    // Storage may be off; the browser's languages decide then.
  }
  if (saved && WORDS[saved]) return saved;
  const wanted = navigator.languages?.length ? navigator.languages : [navigator.language || 'en'];
  return wanted.some((l) => /^zh\b/i.test(l)) ? 'zh-CN' : 'en';
}

function setLanguage(next) {
  lang = WORDS[next] ? next : 'en';
  try {
    localStorage.setItem(LANG_KEY, lang);
  } catch {
    // Not kept; it still applies to this page.
  }
  render();
}

/** The words for `key` in the chosen language, with `{name}` replaced from `vars`. */
function t(key, vars = {}) {
  const text = WORDS[lang][key] ?? WORDS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

function formatTime(iso, seconds = false) {
  if (!iso) return '—';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: seconds ? 'medium' : 'short' }).format(date);
}

// ---------------------------------------------------------------------------------------------
// DOM

/**
 * An element: `attrs` become attributes, except functions under `on…` (event listeners) and
 * `value`, `checked`, `disabled`, `hidden`, `selected` (properties). Children are nodes or text
 * (null, undefined and false are skipped; arrays are flattened). Never parses HTML.
 */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (['value', 'checked', 'disabled', 'hidden', 'selected'].includes(key)) {
      el[key] = value;
    } else if (key !== 'style') {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  return append(el, ...children);
}

/** Appends nodes or text to `el` (skipping null, undefined and false; flattening arrays). */
function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An empty box whose content is replaced later (a list that loads, a form's message). */
function slot(attrs = {}) {
  const el = h('div', attrs);
  el.set = (...children) => {
    el.replaceChildren();
    append(el, ...children);
  };
  return el;
}

function loading() {
  return h('p', { class: 'muted', role: 'status' }, t('loading'));
}

function errorBanner(error) {
  const code = error?.code;
  return h(
    'div',
    { class: 'banner banner-error', role: 'alert', 'data-test': 'error', 'data-code': code },
    h('strong', {}, error?.message || String(error)),
    code ? h('span', { class: 'banner-meta' }, `${t('err.code')}: `, h('code', {}, code)) : null,
    error?.requestId
      ? h('span', { class: 'banner-meta' }, `${t('err.request')}: `, h('code', {}, error.requestId))
      : null,
  );
}

function notice(text) {
  return h('div', { class: 'banner banner-ok', role: 'status', 'data-test': 'notice' }, text);
}

/** A labelled input: `<label for>` and the input (with a hint under it, if any). */
function field(id, label, attrs = {}, hint = null, tag = 'input') {
  const hintId = hint ? `${id}-hint` : null;
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    h(tag, { id, name: id, 'aria-describedby': hintId, ...attrs }),
    hint ? h('small', { id: hintId, class: 'muted' }, hint) : null,
  );
}

function selectField(id, label, options, attrs = {}) {
  return h(
    'div',
    { class: 'field' },
    h('label', { for: id }, label),
    h('select', { id, name: id, ...attrs }, options),
  );
}

function option(value, label, selected = false) {
  return h('option', { value, selected }, label);
}

function roleOptions(roles, selected) {
  return roles.map((role) => option(role, t(`role.${role}`), role === selected));
}

function table(attrs, headers, rows) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      attrs,
      h('thead', {}, h('tr', {}, headers.map((text) => h('th', { scope: 'col' }, text)))),
      h('tbody', {}, rows),
    ),
  );
}

/** A time, to the minute (or to the second). */
function time(iso, seconds = false) {
  return h('time', { datetime: iso, title: iso }, formatTime(iso, seconds));
}

/**
 * Runs `work` with the form's buttons disabled, showing its error in `message` (a slot).
 * Returns what `work` returned, or undefined when it failed.
 */
async function busy(form, message, work) {
  const buttons = [...form.querySelectorAll('button')];
  buttons.forEach((b) => (b.disabled = true));
  message?.set();
  try {
    return await work();
  } catch (error) {
    message?.set(errorBanner(error));
    return undefined;
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

function onSubmit(handler) {
  return (event) => {
    event.preventDefault();
    handler(event.currentTarget);
  };
}

function setTitle(text) {
  document.title = `${text} · Cloudlet`;
  return h('h1', { 'data-test': 'page-title' }, text);
}

// ---------------------------------------------------------------------------------------------
// Server

let csrf = null;
let me = null;
let setupNeeded = false;
/** A secret key just made, shown until the person leaves the page: { app, key, rotated }. */
let revealed = null;
/** Stops what the page shown runs in the background (the logs' Follow); render() calls it. */
let leave = null;

class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

/**
 * Calls the server: JSON (or a FormData) in, JSON out (null for an empty answer). Every request carries the
 * CSRF header (reads of an app's users need it where the browser sends no Sec-Fetch-Site: over plain HTTP to an
 * address that is not loopback); a write's `csrf_failed` is retried once with a fresh token. Throws ApiError.
 */
async function api(method, url, body, retried = false) {
  const headers = { accept: 'application/json' };
  const init = { method, credentials: 'same-origin', headers };
  if (csrf) headers['x-cloudlet-csrf'] = csrf;
  if (method !== 'GET') {
    // A form (an upload): the browser writes its content type, with the boundary.
    if (body instanceof FormData) init.body = body;
    else {
      headers['content-type'] = 'application/json';
      if (body !== undefined) init.body = JSON.stringify(body);
    }
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, 'network', t('err.network'));
  }
  const text = await response.text().catch(() => '');
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.ok) return data;
  const error = data?.error ?? {};
  const failure = new ApiError(
    response.status,
    error.code ?? `http_${response.status}`,
    error.message ?? (response.statusText || `HTTP ${response.status}`),
    error.request_id,
  );
  if (response.status === 401 && failure.code === 'console_login_required') signedOut();
  if (failure.code === 'csrf_failed' && !retried && method !== 'GET') {
    await loadState();
    // Signed out meanwhile: only the console's own calls (login, setup) are worth another try.
    if (me || url.startsWith('/console/')) return api(method, url, body, true);
  }
  throw failure;
}

async function loadState() {
  const state = await api('GET', '/console/api/state');
  setupNeeded = Boolean(state?.setup_needed);
  me = state?.person ?? null;
  csrf = state?.csrf ?? null;
}

function signedIn(answer) {
  me = answer.person;
  csrf = answer.csrf;
  setupNeeded = false;
  go('#/apps');
}

function signedOut() {
  const was = me;
  me = null;
  revealed = null;
  if (was || location.hash !== '#/login') go('#/login');
}

const isOwner = () => me?.instance_role === 'owner';
const path = (...parts) => parts.map(encodeURIComponent).join('/');

// ---------------------------------------------------------------------------------------------
// Router and frame

const root = document.getElementById('root');

/** The hash's parts, decoded: `#/apps/shop/data/todos` is ['apps', 'shop', 'data', 'todos']. */
function route() {
  try {
    return location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return ['?'];
  }
}

function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

function render() {
  leave?.();
  document.documentElement.lang = lang;
  const parts = route();
  const [page = '', arg = null] = parts;
  if (!me && page !== 'login') return go('#/login');
  if (me && (page === 'login' || page === '')) return go('#/apps');
  const main = h('main', { id: 'main', class: 'main' });
  root.replaceChildren(header(page), main);
  if (page === 'apps' && arg) return pageApp(main, arg, parts.slice(2));
  if (parts.length > 2) return notFound(main);
  if (page === 'login') return pageLogin(main);
  if (page === 'apps') return pageApps(main);
  if (page === 'people' && !arg) return pagePeople(main);
  if (page === 'audit' && !arg) return pageAudit(main);
  return notFound(main);
}

function header(page) {
  const link = (target, key, test) =>
    h('a', { href: `#/${target}`, 'data-test': test, 'aria-current': page === target ? 'page' : null }, t(key));
  const nav = me
    ? h(
        'nav',
        { class: 'nav', 'aria-label': t('nav.label') },
        link('apps', 'nav.apps', 'nav-apps'),
        isOwner() ? link('people', 'nav.people', 'nav-people') : null,
        link('audit', 'nav.audit', 'nav-audit'),
      )
    : null;
  const who = me
    ? h(
        'span',
        { class: 'whoami', 'data-test': 'whoami', title: me.email },
        h('span', { class: 'whoami-name' }, me.name || me.email),
        me.name ? h('span', { class: 'muted whoami-email' }, me.email) : null,
      )
    : null;
  const logout = me
    ? h('button', { type: 'button', class: 'button-quiet', 'data-test': 'logout', onclick: logOut }, t('header.logout'))
    : null;
  const languages = h(
    'span',
    { class: 'lang' },
    h('label', { for: 'lang', class: 'visually-hidden' }, t('header.language')),
    h(
      'select',
      { id: 'lang', 'data-test': 'lang', onchange: (e) => setLanguage(e.target.value) },
      Object.entries(LANGUAGE_NAMES).map(([code, name]) => option(code, name, code === lang)),
    ),
  );
  return h(
    'header',
    { class: 'header' },
    h('a', { class: 'brand', href: me ? '#/apps' : '#/login', 'aria-label': t('app.name') }, 'Cloudlet'),
    nav,
    h('div', { class: 'header-end' }, who, logout, languages),
  );
}

async function logOut(event) {
  event.currentTarget.disabled = true;
  try {
    await api('POST', '/console/api/logout', {});
  } catch {
    // Signed out here whatever the server said; a stale cookie gets a 401 next time.
  }
  me = null;
  csrf = null;
  revealed = null;
  try {
    await loadState();
  } catch {
    // The login page still shows; its own requests will say what is wrong.
  }
  go('#/login');
}

function notFound(main) {
  append(main, setTitle(t('notFound.title')), h('p', {}, t('notFound.text')));
}

// ---------------------------------------------------------------------------------------------
// Login and first-owner setup

function pageLogin(main) {
  main.setAttribute('data-test', 'login-page');
  main.classList.add('narrow');
  append(main, setupNeeded ? setupForm() : loginForm());
}

function setupForm() {
  const message = slot();
  const submit = (form) =>
    busy(form, message, async () => {
      const answer = await api('POST', '/console/api/setup', {
        admin_token: form.elements['setup-token'].value,
        email: form.elements['setup-email'].value.trim(),
        name: form.elements['setup-name'].value.trim(),
        password: form.elements['setup-password'].value,
      });
      signedIn(answer);
    });
  return h(
    'form',
    { class: 'card stack', 'data-test': 'setup-form', onsubmit: onSubmit(submit) },
    setTitle(t('setup.title')),
    h('p', { class: 'muted' }, t('setup.intro')),
    message,
    field('setup-token', t('setup.token'), { type: 'password', required: true, autocomplete: 'off', 'data-test': 'setup-token' }),
    field('setup-email', t('field.email'), { type: 'email', required: true, autocomplete: 'username', 'data-test': 'setup-email' }),
    field('setup-name', t('field.name'), { required: true, autocomplete: 'name', 'data-test': 'setup-name' }),
    field(
      'setup-password',
      t('field.password'),
      { type: 'password', required: true, autocomplete: 'new-password', 'data-test': 'setup-password' },
      t('field.passwordHint'),
    ),
    h('button', { type: 'submit', class: 'button-primary', 'data-test': 'setup-submit' }, t('setup.submit')),
  );
}

function loginForm() {
  const message = slot();
  const submit = (form) =>
    busy(form, message, async () => {
      const answer = await api('POST', '/console/api/login', {
        email: form.elements['login-email'].value.trim(),
        password: form.elements['login-password'].value,
      });
      signedIn(answer);
    });
  return h(
    'form',
    { class: 'card stack', 'data-test': 'login-form', onsubmit: onSubmit(submit) },
    setTitle(t('login.title')),
    message,
    field('login-email', t('field.email'), { type: 'email', required: true, autocomplete: 'username', 'data-test': 'login-email' }),
    field('login-password', t('field.password'), { type: 'password', required: true, autocomplete: 'current-password', 'data-test': 'login-password' }),
    h('button', { type: 'submit', class: 'button-primary', 'data-test': 'login-submit' }, t('login.submit')),
  );
}

// ---------------------------------------------------------------------------------------------
// Apps

function pageApps(main) {
  main.setAttribute('data-test', 'apps-page');
  const list = slot();
  list.set(loading());
  append(main, setTitle(t('apps.title')), revealed && !revealed.rotated ? secretBox() : null, list);
  if (isOwner()) main.append(createAppForm());
  api('GET', '/console/api/apps').then(
    (answer) => list.set(appsTable(answer?.items ?? [])),
    (error) => list.set(errorBanner(error)),
  );
}

function appsTable(apps) {
  if (!apps.length) return h('p', { class: 'muted' }, t(isOwner() ? 'apps.empty' : 'apps.emptyMember'));
  const rows = apps.map((app) =>
    h(
      'tr',
      { 'data-test': 'app-row', 'data-app': app.name, 'data-role': app.role },
      h('td', {}, h('a', { href: `#/apps/${path(app.name)}`, 'data-test': 'app-link', 'data-app': app.name }, app.name)),
      h('td', { 'data-test': 'app-role' }, roleBadge(app.role)),
      h('td', {}, time(app.created_at)),
    ),
  );
  return table({ 'data-test': 'apps-table' }, [t('apps.name'), t('apps.role'), t('apps.created')], rows);
}

function roleBadge(role) {
  return h('span', { class: `badge badge-${role}` }, t(`role.${role}`));
}

function createAppForm() {
  const message = slot();
  const submit = (form) =>
    busy(form, message, async () => {
      const name = form.elements['new-app-name'].value.trim();
      if (!APP_NAME.test(name)) throw new ApiError(0, null, t('apps.badName'));
      const answer = await api('POST', '/v1/admin/apps', { name });
      revealed = { app: answer.name, key: answer.secret_key, rotated: false };
      render();
    });
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('apps.create')),
    h(
      'form',
      { class: 'inline-form', 'data-test': 'create-app-form', onsubmit: onSubmit(submit) },
      field(
        'new-app-name',
        t('apps.newName'),
        { required: true, autocomplete: 'off', spellcheck: 'false', maxlength: 40, 'data-test': 'new-app-name' },
        t('apps.nameHint'),
      ),
      h('button', { type: 'submit', class: 'button-primary', 'data-test': 'new-app-submit' }, t('apps.createSubmit')),
    ),
    message,
  );
}

/** The secret key just made (`revealed`), once: selectable, with a copy button and a warning. */
function secretBox() {
  const { app, key, rotated } = revealed;
  const code = h('code', { class: 'secret-key', tabindex: '0', 'data-test': 'secret-key' }, key);
  code.addEventListener('focus', () => selectText(code));
  const status = h('span', { class: 'muted', role: 'status' });
  const copy = async () => {
    selectText(code);
    try {
      await navigator.clipboard.writeText(key);
      status.textContent = t('secret.copied');
    } catch {
      selectText(code);
      const copied = document.execCommand?.('copy');
      status.textContent = t(copied ? 'secret.copied' : 'secret.copyFailed');
    }
  };
  const done = () => {
    revealed = null;
    render();
  };
  return h(
    'section',
    { class: 'card secret-box', 'data-test': 'secret-box', 'aria-labelledby': 'secret-title' },
    h('h2', { id: 'secret-title' }, t(rotated ? 'secret.rotated' : 'secret.created', { app })),
    h('p', { class: 'warning' }, t('secret.warning')),
    code,
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'button', 'data-test': 'copy-secret', onclick: copy }, t('secret.copy')),
      h('button', { type: 'button', class: 'button-quiet', 'data-test': 'secret-done', onclick: done }, t('secret.done')),
      status,
    ),
  );
}

function selectText(el) {
  const range = document.createRange();
  range.selectNodeContents(el);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// ---------------------------------------------------------------------------------------------
// One app

/** The app's sections: each a tab, each a page, and a page for one item of it. */
const APP_TABS = {
  overview: [pageOverview],
  data: [pageData, pageCollection, 'collection'],
  files: [pageFiles, pageBucket, 'bucket'],
  functions: [pageFunctions, pageFunction, 'function'],
  queues: [pageQueues, pageQueue, 'queue'],
  // Personal data: a tab for developers and owners only (the server refuses viewers anyway).
  users: [pageUsers, pageUser, 'user', writer],
  // Orders, callbacks and bills: personal data too. Refunds need the app's owner.
  payments: [pagePayments, pageOrder, 'order', writer],
  realtime: [pageRealtime],
  // Login providers (secrets: owners change them) and the functions' environment.
  settings: [pageSettings, null, null, writer],
};

/**
 * An app's page: its name, its tabs, then the section's own view, which is called with
 * `{ name, body, role, item }`: `body` a slot to fill, `role` a promise of the person's role on
 * the app (null when none), `item` the collection, function or queue of the hash, if any.
 */
function pageApp(main, name, [tab = 'overview', item = null, ...more]) {
  const [list, one, what] = APP_TABS[tab] ?? [];
  const view = item ? one : list;
  if (!view || more.length) return notFound(main);
  main.setAttribute('data-test', item ? `${what}-page` : tab === 'overview' ? 'app-page' : `${tab}-page`);
  const base = `#/apps/${path(name)}`;
  const tabLinks = (mine) =>
    Object.entries(APP_TABS)
      .filter(([, [, , , may]]) => !may || may(mine))
      .map(([key]) =>
        h(
          'a',
          {
            href: key === 'overview' ? base : `${base}/${key}`,
            'data-test': `tab-${key}`,
            'aria-current': key === tab ? 'page' : null,
          },
          t(`tab.${key}`),
        ),
      );
  // The tabs everybody has at once; those a role needs once the role is known.
  const tabs = h('nav', { class: 'tabs', 'aria-label': t('app.sections') }, tabLinks(null));
  const body = slot();
  body.set(loading());
  append(
    main,
    h('p', { class: 'crumb' }, h('a', { href: '#/apps' }, `← ${t('app.back')}`)),
    setTitle(name),
    tabs,
    revealed?.rotated && revealed.app === name ? secretBox() : null,
    body,
  );
  const role = isOwner()
    ? Promise.resolve('owner')
    : api('GET', '/console/api/apps').then(
        (answer) => answer?.items?.find((a) => a.name === name)?.role ?? null,
        () => null,
      );
  role.then((mine) => tabs.replaceChildren(...tabLinks(mine)));
  view({ name, body, role, item });
}

/** Whether a role may change things (and read personal data: function logs, users). */
function writer(role) {
  return role === 'owner' || role === 'developer';
}
const adminUrl = (name, ...rest) => `/v1/admin/apps/${path(name, ...rest)}`;

function pageOverview({ name, body, role }) {
  const app = adminUrl(name);
  const usage = usageSection(name);
  Promise.allSettled([role, api('GET', app), api('GET', `${app}/collections`)]).then(
    ([mine, details, collections]) => {
      if (details.status === 'rejected') return body.set(errorBanner(details.reason));
      body.set(
        appDetails(details.value, mine.value),
        usage,
        collectionsSection(name, collections),
        isOwner() ? rotateSection(name) : null,
        isOwner() ? deleteSection(name) : null,
      );
    },
  );
}

function appDetails(app, role) {
  const row = (label, value, test) => [h('dt', {}, label), h('dd', { 'data-test': test }, value)];
  return h(
    'section',
    { class: 'card', 'data-test': 'app-details' },
    h('h2', {}, t('app.details')),
    h(
      'dl',
      { class: 'details' },
      role ? row(t('apps.role'), roleBadge(role), 'app-role') : null,
      row(t('app.created'), time(app.created_at), 'app-created'),
      row(t('app.keyHint'), h('code', {}, `${app.secret_key_hint ?? ''}…`), 'key-hint'),
      row(t('app.keyCreated'), time(app.secret_key_created_at), 'key-created'),
    ),
  );
}

function collectionsSection(app, result) {
  let content;
  if (result.status === 'rejected') content = errorBanner(result.reason);
  else {
    const items = Array.isArray(result.value) ? result.value : result.value?.items ?? [];
    content = items.length
      ? table(
          { 'data-test': 'collections' },
          [t('app.collection'), t('app.fields')],
          items.map((c) =>
            h(
              'tr',
              { 'data-test': 'collection-row', 'data-collection': c.name },
              h('td', {}, h('a', { href: `#/apps/${path(app)}/data/${path(c.name)}` }, h('code', {}, c.name))),
              h('td', { class: 'num' }, fieldCount(c.fields)),
            ),
          ),
        )
      : h('p', { class: 'muted', 'data-test': 'collections' }, t('app.noCollections'));
  }
  return h('section', { class: 'card' }, h('h2', {}, t('app.collections')), content);
}

function fieldCount(fields) {
  if (Array.isArray(fields)) return fields.length;
  if (fields && typeof fields === 'object') return Object.keys(fields).length;
  return '—';
}

/** Rotate the key: a button, then a confirmation with the warning. */
function rotateSection(name) {
  const message = slot();
  const area = slot();
  const ask = () =>
    area.set(
      h(
        'div',
        { class: 'confirm' },
        h('p', { class: 'warning' }, t('app.rotateWarning')),
        h(
          'div',
          { class: 'actions' },
          h('button', { type: 'button', class: 'button-danger', 'data-test': 'rotate-confirm', onclick: rotate }, t('app.rotateConfirm')),
          h('button', { type: 'button', class: 'button-quiet', 'data-test': 'rotate-cancel', onclick: idle }, t('cancel')),
        ),
      ),
    );
  const idle = () =>
    area.set(h('button', { type: 'button', 'data-test': 'rotate-key', onclick: ask }, t('app.rotate')));
  const rotate = () =>
    busy(area, message, async () => {
      const answer = await api('POST', `/v1/admin/apps/${path(name)}/keys/rotate`, {});
      revealed = { app: name, key: answer.secret_key, rotated: true };
      render();
    });
  idle();
  return h('section', { class: 'card' }, h('h2', {}, t('app.key')), message, area);
}

/** Delete the app: a button, then the app's name to type before the final button works. */
function deleteSection(name) {
  const message = slot();
  const area = slot();
  const ask = () => {
    const confirm = h(
      'button',
      { type: 'submit', class: 'button-danger', disabled: true, 'data-test': 'delete-app-confirm' },
      t('app.deleteConfirm'),
    );
    const typed = (e) => (confirm.disabled = e.target.value !== name);
    const form = h(
      'form',
      { class: 'confirm stack', onsubmit: onSubmit(remove) },
      h('p', { class: 'warning' }, t('app.deleteWarning')),
      field('delete-app-name', t('app.deleteName'), {
        autocomplete: 'off',
        spellcheck: 'false',
        'data-test': 'delete-app-name',
        oninput: typed,
      }),
      h(
        'div',
        { class: 'actions' },
        confirm,
        h('button', { type: 'button', class: 'button-quiet', 'data-test': 'delete-app-cancel', onclick: idle }, t('cancel')),
      ),
    );
    area.set(form);
    form.elements['delete-app-name'].focus();
  };
  const idle = () =>
    area.set(h('button', { type: 'button', class: 'button-danger', 'data-test': 'delete-app', onclick: ask }, t('app.delete')));
  const remove = (form) => {
    if (form.elements['delete-app-name'].value !== name) return undefined;
    return busy(form, message, async () => {
      await api('DELETE', `/v1/admin/apps/${path(name)}`);
      revealed = null;
      go('#/apps');
    });
  };
  idle();
  return h('section', { class: 'card card-danger' }, h('h2', {}, t('app.deleteSection')), message, area);
}

// ---------------------------------------------------------------------------------------------
// Traffic: the overview's tiles and charts (GET …/usage: 60 minutes and 24 hours, oldest first)

/** The latency buckets' bounds in ms; the last one stands for "over 2 s". */
const OVER_2S = 4294967295;
const P99_BOUNDS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, OVER_2S];
const SVG = 'http://www.w3.org/2000/svg';

/** An SVG element: attributes set as they are, children appended (no HTML parsed). */
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  return append(el, ...children);
}

const num = (n) => new Intl.NumberFormat(lang).format(Number(n) || 0);

function latency(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms >= OVER_2S) return t('usage.over2s');
  return ms >= 1000 ? t('unit.s', { n: num(ms / 1000) }) : t('unit.ms', { n: num(ms) });
}

function bytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = Number(n) || 0;
  let unit = 0;
  for (; value >= 1024 && unit < units.length - 1; unit += 1) value /= 1024;
  return `${new Intl.NumberFormat(lang, { maximumFractionDigits: value < 10 && unit ? 1 : 0 }).format(value)} ${units[unit]}`;
}

function usageSection(name) {
  let answer = null;
  let range = 'hour';
  const content = slot();
  content.set(loading());
  const show = () => {
    section.dataset.range = range;
    for (const b of ranges) b.setAttribute('aria-pressed', String(b.dataset.range === range));
    if (answer) content.set(usageView(answer, range));
  };
  const ranges = ['hour', 'day'].map((r) =>
    h('button', { type: 'button', class: 'button-small', 'data-range': r, onclick: () => ((range = r), show()) }, t(`usage.${r}`)),
  );
  const refresh = h('button', { type: 'button', class: 'button-small', 'data-test': 'usage-refresh', onclick: () => load() }, t('refresh'));
  const load = async () => {
    refresh.disabled = true;
    try {
      answer = await api('GET', adminUrl(name, 'usage'));
      show();
    } catch (error) {
      content.set(errorBanner(error));
    }
    refresh.disabled = false;
  };
  const section = h(
    'section',
    { class: 'card', 'data-test': 'usage' },
    cardHead(t('usage.title'), h('div', { class: 'segmented', role: 'group', 'aria-label': t('usage.range'), 'data-test': 'usage-range' }, ranges), refresh),
    content,
  );
  show();
  load();
  return section;
}

function usageView(answer, range) {
  const points = (range === 'day' ? answer.hours : answer.minutes) ?? [];
  const sum = (key) => points.reduce((total, p) => total + (Number(p[key]) || 0), 0);
  const p99s = points.map((p) => p.p99_ms).filter((ms) => typeof ms === 'number');
  const p99 = p99s.length ? Math.max(...p99s) : null;
  const tile = (label, value, test, raw, hint) =>
    h(
      'div',
      { class: 'tile' },
      h('span', { class: 'tile-label' }, label),
      h('strong', { class: 'tile-value', 'data-test': test, 'data-value': raw }, value),
      hint,
    );
  const hint = (text, test, raw) => h('span', { class: 'muted tile-hint', 'data-test': test, 'data-value': raw }, text);
  const [requests, errors, clientErrors, invocations] = ['requests', 'errors', 'client_errors', 'invocations'].map(sum);
  const clock = (iso) => new Intl.DateTimeFormat(lang, { hour: '2-digit', minute: '2-digit' }).format(new Date(iso));
  const bucket = (ms) => (ms === null || ms === undefined ? 0 : P99_BOUNDS.findIndex((bound) => ms <= bound) + 1 || P99_BOUNDS.length);
  return [
    h(
      'div',
      { class: 'tiles' },
      tile(t('usage.requests'), num(requests), 'usage-requests-total', requests),
      tile(t('usage.errors'), num(errors), 'usage-errors-total', errors, hint(t('usage.clientErrorsHint', { n: num(clientErrors) }))),
      tile(t('usage.p99'), latency(p99), 'usage-p99', p99 ?? ''),
      tile(t('usage.invocations'), num(invocations), 'usage-invocations-total', invocations),
      tile(t('usage.connections'), num(answer.realtime_connections), 'usage-connections', answer.realtime_connections, hint(t('usage.openNow'))),
      tile(t('usage.files'), num(answer.files), 'usage-files', answer.files, hint(bytes(answer.file_bytes), 'usage-file-bytes', answer.file_bytes)),
    ),
    h(
      'div',
      { class: 'charts' },
      chart({
        test: 'chart-requests',
        title: t('usage.chartRequests'),
        points,
        clock,
        // Errors are requests too: drawn over the bottom of their period's bar.
        bars: [
          ['bar', (p) => p.requests],
          ['bar bar-client', (p) => (p.client_errors ?? 0) + (p.errors ?? 0)],
          ['bar bar-error', (p) => p.errors],
        ],
        max: (top) => num(top),
        label: (p) =>
          t('usage.barRequests', { time: clock(p.at), requests: num(p.requests), client: num(p.client_errors), errors: num(p.errors) }),
        legend: [
          ['bar', t('usage.requests')],
          ['bar-client', t('usage.clientErrors')],
          ['bar-error', t('usage.errors')],
        ],
      }),
      // The latency is a bucket's bound: drawn on the buckets' own (ordinal) scale.
      chart({
        test: 'chart-p99',
        title: t('usage.chartP99'),
        points,
        clock,
        bars: [['bar bar-p99', (p) => bucket(p.p99_ms)]],
        max: (top) => latency(P99_BOUNDS[top - 1]),
        label: (p) => t('usage.barP99', { time: clock(p.at), value: latency(p.p99_ms) }),
      }),
      chart({
        test: 'chart-invocations',
        title: t('usage.chartInvocations'),
        points,
        clock,
        bars: [['bar bar-fn', (p) => p.invocations]],
        max: (top) => num(top),
        label: (p) => t('usage.barInvocations', { time: clock(p.at), n: num(p.invocations) }),
      }),
    ),
    h('p', { class: 'muted small' }, t('usage.note')),
  ];
}

/**
 * A small bar chart, one period a bar: `bars` are [class, value of a point] drawn over each
 * other (the first the tallest), scaled to the highest first value; the highest is written
 * above, the first and last periods' times below, each bar's numbers in its tooltip.
 */
function chart({ test, title, points, clock, bars, max, label, legend }) {
  const top = Math.max(0, ...points.map((p) => Number(bars[0][1](p)) || 0));
  const width = 10;
  const height = 100;
  const periods = points.map((p, i) => {
    const x = i * width;
    const rects = bars.map(([cls, value]) => {
      const v = Number(value(p)) || 0;
      if (!v || !top) return null;
      const tall = Math.max(1.5, (v / top) * height);
      return svg('rect', { class: cls, x: x + 1, y: height - tall, width: width - 2, height: tall });
    });
    return svg('g', {}, svg('title', {}, label(p)), svg('rect', { class: 'hit', x, y: 0, width, height }), rects);
  });
  return h(
    'figure',
    { class: 'chart' },
    h('figcaption', {}, h('span', {}, title), h('span', { class: 'muted' }, t('usage.max', { value: top ? max(top) : '0' }))),
    svg(
      'svg',
      {
        viewBox: `0 0 ${Math.max(1, points.length) * width} ${height}`,
        preserveAspectRatio: 'none',
        role: 'img',
        'aria-label': title,
        'data-test': test,
      },
      periods,
    ),
    points.length
      ? h('div', { class: 'chart-axis muted' }, h('span', {}, clock(points[0].at)), h('span', {}, clock(points[points.length - 1].at)))
      : null,
    legend
      ? h(
          'div',
          { class: 'chart-legend muted' },
          legend.map(([cls, text]) => h('span', {}, h('span', { class: `swatch swatch-${cls}` }), text)),
        )
      : null,
  );
}

// ---------------------------------------------------------------------------------------------
// Shared by the app's sections

/** A JSON value in a table cell: text as it is, anything else as compact JSON, long ones cut. */
function compact(value) {
  if (value === null || value === undefined) return h('span', { class: 'muted' }, 'null');
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text.length > 80 ? h('span', { title: text }, `${text.slice(0, 79)}…`) : text;
}

/** The JSON typed into a textarea, or an ApiError that says what is wrong with it. */
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ApiError(0, 'invalid_json', t('err.json', { message: error.message }));
  }
}

/** The JSON object typed into a textarea (an ApiError otherwise). */
function parseObject(text) {
  const value = parseJson(text);
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new ApiError(0, 'invalid_json', t('err.object'));
  return value;
}

const pretty = (value) => JSON.stringify(value, null, 2);

/**
 * A dangerous button that asks first: `label` (data-test `test`), then `question` with `yes`
 * (`test`-confirm) and cancel (`test`-cancel). `action(area)` runs on yes. `attrs` go on both
 * dangerous buttons (a `data-id`).
 */
function confirmButton(label, question, yes, test, action, attrs = {}) {
  const area = h('span', { class: 'confirm-inline' });
  const button = (text, more) => h('button', { type: 'button', class: 'button-small button-danger', ...attrs, ...more }, text);
  const idle = () => area.replaceChildren(button(label, { 'data-test': test, onclick: ask }));
  const ask = () =>
    area.replaceChildren(
      h('span', { class: 'muted' }, question),
      button(yes, { 'data-test': `${test}-confirm`, onclick: () => action(area) }),
      h('button', { type: 'button', class: 'button-small button-quiet', 'data-test': `${test}-cancel`, onclick: idle }, t('cancel')),
    );
  idle();
  return area;
}

/** A card's heading with, at its end, a few buttons. */
const cardHead = (title, ...buttons) => h('div', { class: 'card-head' }, h('h2', {}, title), h('div', { class: 'actions' }, buttons));
const crumb = (href, text) => h('p', { class: 'crumb' }, h('a', { href }, `← ${text}`));
const cell = (value, test) => h('td', { class: 'num', 'data-test': test }, value);
const detailRow = (label, value, test) => [h('dt', {}, label), h('dd', { 'data-test': test }, value)];

function loadInto(target, promise, show) {
  return promise.then(
    (answer) => target.set(show(answer)),
    (error) => target.set(errorBanner(error)),
  );
}

// ---------------------------------------------------------------------------------------------
// Data: collections and their records

const RULES = ['list', 'view', 'create', 'update', 'delete'];
const CONSTRAINTS = ['default', 'min_length', 'max_length', 'min', 'max', 'enum'];
const PAGE_SIZE = 50;
const FIELD_TYPES = ['text', 'number', 'integer', 'bool', 'datetime', 'json', 'relation', 'file'];
/** The constraints the schema editor offers for a type, besides `default` (which all have). */
const TYPE_CONSTRAINTS = {
  text: ['min_length', 'max_length', 'enum'],
  number: ['min', 'max', 'enum'],
  integer: ['min', 'max', 'enum'],
  relation: ['collection'],
};
const NUMERIC = ['number', 'integer'];
const CONSTRAINT_KEYS = ['default', 'min_length', 'max_length', 'min', 'max', 'enum', 'collection'];
/** A value as JSON when it is JSON (`true`, `2`, `"a"`), else as the text it is. */
const literal = (text) => {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
};
/** A default of each type, as the placeholder of the default's input. */
const DEFAULT_EXAMPLES = { text: '"draft"', number: '0', integer: '0', bool: 'false', datetime: '"2026-01-01T00:00:00Z"', json: '{}' };
/** The keys of a field that the editor writes: any other key of an existing field is kept as it was. */
const FIELD_KEYS = ['name', 'type', 'required', 'unique', 'default', 'min_length', 'max_length', 'min', 'max', 'enum', 'collection'];
/** How a rule is given: left out (the server's default), null, "" or an expression. */
const RULE_MODES = ['default', 'admin', 'everyone', 'when'];
const DEFAULT_RULES = { list: 'owner = @auth.id', view: 'owner = @auth.id', create: '@auth.id != null', update: 'owner = @auth.id', delete: 'owner = @auth.id' };
/** How long typing pauses before the definition is checked, in ms. */
const CHECK_DELAY = 300;
/** The <datalist> of the app's collections (a relation's target), one on the Data page. */
const COLLECTION_NAMES = 'collection-names';

const listOf = (answer) => (Array.isArray(answer) ? answer : answer?.items ?? []);
let lastId = 0;
const uniqueId = (prefix) => `${prefix}-${++lastId}`;

function pageData({ name, body, role }) {
  const list = slot();
  const names = h('datalist', { id: COLLECTION_NAMES });
  list.set(loading());
  // After a save: `{ name, text }`, the notice shown on that collection's card.
  const load = (flash = null) =>
    loadInto(list, Promise.all([api('GET', adminUrl(name, 'collections')), role]), ([answer, mine]) => {
      const items = listOf(answer);
      names.replaceChildren(...items.map((c) => h('option', { value: c.name })));
      return items.length
        ? items.map((c) => collectionCard(name, c, writer(mine) ? load : null, flash?.name === c.name ? flash.text : null))
        : h('p', { class: 'muted card', 'data-test': 'collections' }, t('app.noCollections'));
    });
  role.then((mine) => body.set(list, names, writer(mine) ? newCollectionForm(name, load) : null));
  load();
}

/** A collection, read-only; with `reload` (developers and owners), its "Edit schema". */
function collectionCard(app, c, reload, saved) {
  const card = h('section', { class: 'card', 'data-test': 'collection', 'data-collection': c.name });
  const title = h('a', { href: `#/apps/${path(app)}/data/${path(c.name)}`, 'data-test': 'collection-link', 'data-collection': c.name }, c.name);
  const version = h('span', { class: 'muted' }, t('data.version', { version: c.version }));
  const show = (text = null) => {
    const edit = reload
      ? h('button', { type: 'button', class: 'button-small', 'data-test': 'edit-schema', 'data-collection': c.name, onclick: open }, t('data.editSchema'))
      : null;
    card.replaceChildren();
    append(card, cardHead(title, version, edit), text ? notice(text) : null, collectionView(c));
  };
  const open = () => {
    const editor = schemaEditor(app, c, { saved: (text) => reload({ name: c.name, text }), cancel: () => show() });
    card.replaceChildren(cardHead(title, h('span', { class: 'badge' }, t('data.editSchema')), version), editor);
    editor.querySelector('input')?.focus();
  };
  show(saved);
  return card;
}

function collectionView(c) {
  const rules = c.rules ?? {};
  const fields = c.fields ?? [];
  const indexes = (c.indexes ?? []).map((index) =>
    h('li', {}, h('code', {}, `(${(index.fields ?? []).join(', ')})`), index.unique ? [' ', t('c.unique')] : null),
  );
  return [
    table(
      { 'data-test': 'fields' },
      [t('data.field'), t('data.type'), t('data.constraints')],
      fields.map((f) =>
        h(
          'tr',
          { 'data-test': 'field-row', 'data-field': f.name },
          h('td', {}, h('code', {}, f.name)),
          h('td', {}, f.type, f.collection ? ` → ${f.collection}` : null),
          h('td', {}, constraints(f)),
        ),
      ),
    ),
    h(
      'dl',
      { class: 'details' },
      detailRow(
        t('data.indexes'),
        indexes.length ? h('ul', { class: 'plain' }, indexes) : h('span', { class: 'muted' }, t('none')),
        'indexes',
      ),
      RULES.map((action) => detailRow(t(`rule.${action}`), ruleText(rules[action]), `rule-${action}`)),
    ),
  ];
}

function constraints(f) {
  const items = [f.required && t('c.required'), f.unique && t('c.unique')].filter(Boolean);
  for (const key of CONSTRAINTS) {
    if (f[key] !== undefined && f[key] !== null) items.push(`${t(`c.${key}`)} ${JSON.stringify(f[key])}`);
  }
  return items.length ? items.join(' · ') : h('span', { class: 'muted' }, '—');
}

function ruleText(rule) {
  if (rule === '') return h('span', { class: 'badge' }, t('rule.everyone'));
  if (rule === null) return h('span', { class: 'badge' }, t('rule.admin'));
  return rule === undefined ? '—' : h('code', {}, rule);
}

/** The card that creates a collection: the schema editor with a name; fresh again once saved. */
function newCollectionForm(app, reload) {
  const card = h('section', { class: 'card' });
  const fresh = (text = null) => {
    card.replaceChildren();
    append(
      card,
      h('h2', {}, t('data.create')),
      text ? notice(text) : null,
      schemaEditor(app, null, {
        saved: async (said) => {
          await reload();
          fresh(said);
        },
      }),
    );
  };
  fresh();
  return card;
}

/**
 * The schema editor of a collection (`existing`), or of a new one (null: with its name): fields,
 * indexes and the five rules. Every change is checked by the server (`…/check`, after a pause
 * in typing; only the latest answer counts): its plan, or its problem, which for a rule is shown
 * under that rule with the place it is at. Saving puts the definition; a plan that loses data
 * needs a confirmation first (and is sent with `force`). `saved(text)` runs after a save,
 * `cancel()` on Cancel (none for a new collection).
 */
function schemaEditor(app, existing, { saved, cancel = null }) {
  const creating = !existing;
  const id = uniqueId('schema');
  const message = slot();
  const problem = slot({ 'data-test': 'schema-problem' });
  const status = h('p', { class: 'schema-check', 'data-test': 'schema-check', 'aria-live': 'polite' });
  const fieldRows = h('div', { class: 'schema-rows', 'data-test': 'schema-fields' });
  const indexRows = h('div', { class: 'schema-rows', 'data-test': 'schema-indexes' });
  const force = h('input', { type: 'checkbox', id: `${id}-force`, 'data-test': 'schema-force' });
  const forceBox = h('label', { class: 'check schema-force', for: `${id}-force`, hidden: true }, force, t('schema.force'));
  const save = h('button', { type: 'submit', class: 'button-primary', 'data-test': 'schema-save' }, t(creating ? 'data.createSubmit' : 'schema.save'));
  let timer = null;
  let asked = 0; // bumped by every change: an answer to an older definition is dropped
  let plan = null; // the plan of the last answer

  const nameField = creating
    ? field(
        `${id}-name`,
        t('data.name'),
        { required: true, autocomplete: 'off', spellcheck: 'false', maxlength: 40, 'data-test': 'new-collection-name' },
        t('data.nameHint'),
      )
    : null;
  const nameInput = nameField?.querySelector('input');
  const collectionName = () => (creating ? nameInput.value.trim() : existing.name);

  // ---- fields
  const fieldRow = (f = { name: '', type: 'text' }) => {
    const key = uniqueId(`${id}-f`);
    const input = (k, attrs) => h('input', { id: `${key}-${k}`, autocomplete: 'off', spellcheck: 'false', ...attrs });
    const name = input('name', { value: f.name ?? '', required: true, maxlength: 40, 'data-test': 'field-name' });
    const type = h(
      'select',
      { id: `${key}-type`, 'data-test': 'field-type' },
      FIELD_TYPES.map((x) => option(x, x, x === f.type)),
    );
    if (!FIELD_TYPES.includes(f.type)) type.append(option(f.type, f.type, true)); // kept as it is
    const check = (k, on, label) =>
      h('label', { class: 'check' }, h('input', { type: 'checkbox', id: `${key}-${k}`, checked: Boolean(on), 'data-test': `field-${k}` }), label);
    const required = check('required', f.required, t('schema.required'));
    const unique = check('unique', f.unique, t('schema.unique'));
    const shown = (k) => (k === 'enum' ? (f.enum ?? []).map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(', ') : f[k]);
    // Those of its type, and any other the field already has (while its type stays).
    const offered = () => [
      ...new Set(['default', ...(TYPE_CONSTRAINTS[type.value] ?? []), ...(type.value === f.type ? CONSTRAINT_KEYS.filter((k) => f[k] !== undefined) : [])]),
    ];
    const numberAttrs = (k) =>
      k === 'min_length' || k === 'max_length' ? { type: 'number', min: 0, step: 1 } : k === 'min' || k === 'max' ? { type: 'number', step: 'any' } : {};
    const boxes = Object.fromEntries(
      CONSTRAINT_KEYS.map((k) => {
        const value = k === 'default' ? (f.default === undefined ? '' : JSON.stringify(f.default)) : shown(k) ?? '';
        const el = input(k, {
          value: String(value),
          'data-test': 'field-constraint',
          'data-key': k,
          list: k === 'collection' ? COLLECTION_NAMES : null,
          ...numberAttrs(k),
        });
        const commas = k === 'enum' ? h('span', { class: 'visually-hidden' }, ` (${t('schema.commas')})`) : null;
        return [k, h('div', { class: `field field-${k}` }, h('label', { for: el.id }, t(`schema.c.${k}`), commas), el)];
      }),
    );
    const remove = h('button', { type: 'button', class: 'button-small button-quiet', 'data-test': 'remove-field' }, t('schema.removeField'));
    const row = h(
      'div',
      { class: 'schema-row', 'data-test': 'schema-field' },
      h('div', { class: 'field field-name' }, h('label', { for: name.id }, t('schema.fieldName')), name),
      h('div', { class: 'field field-type' }, h('label', { for: type.id }, t('data.type')), type),
      required,
      unique,
      Object.values(boxes),
      remove,
    );
    const fit = () => {
      const applies = offered();
      for (const [k, box] of Object.entries(boxes)) box.hidden = !applies.includes(k);
      boxes.default.querySelector('input').placeholder = DEFAULT_EXAMPLES[type.value] ?? '"…"';
      boxes.enum.querySelector('input').placeholder = NUMERIC.includes(type.value) ? '1, 2, 3' : 'a, b, c';
      row.dataset.field = name.value.trim();
      remove.setAttribute('aria-label', t('schema.removeFieldLabel', { name: name.value.trim() }));
    };
    type.addEventListener('change', fit);
    name.addEventListener('input', fit);
    remove.addEventListener('click', () => {
      row.remove();
      changed();
    });
    /** The field as the API takes it; what cannot be sent goes into `problems`. */
    row.read = (problems) => {
      const out = { name: name.value.trim(), type: type.value };
      if (required.querySelector('input').checked) out.required = true;
      if (unique.querySelector('input').checked) out.unique = true;
      for (const [k, v] of Object.entries(f)) if (!FIELD_KEYS.includes(k)) out[k] = v;
      const bad = (el, text) => problems.push({ el, message: text });
      for (const k of offered()) {
        const el = boxes[k].querySelector('input');
        const text = el.value.trim();
        if (el.validity.badInput) {
          bad(el, t('schema.badNumber', { what: t(`schema.c.${k}`), field: out.name }));
          continue;
        }
        if (!text) continue;
        if (k === 'default') {
          try {
            out.default = JSON.parse(text);
          } catch (error) {
            bad(el, t('schema.badDefault', { field: out.name, message: error.message }));
          }
        } else if (k === 'enum') {
          const values = text.split(',').map((v) => v.trim()).filter(Boolean);
          if (NUMERIC.includes(type.value)) {
            const numbers = values.map(Number);
            if (numbers.some((n) => !Number.isFinite(n))) bad(el, t('schema.badEnum', { field: out.name }));
            else out.enum = numbers;
          } else if (type.value === 'text') out.enum = values;
          else out.enum = values.map(literal); // kept from a field of another type: JSON values
        } else if (k === 'collection') {
          out.collection = text;
        } else {
          const n = Number(text);
          const length = k.endsWith('_length');
          if (!Number.isFinite(n) || (length && (!Number.isInteger(n) || n < 0))) {
            bad(el, t('schema.badNumber', { what: t(`schema.c.${k}`), field: out.name }));
          } else out[k] = n;
        }
      }
      return out;
    };
    fit();
    return row;
  };

  // ---- indexes
  const indexRow = (index = { fields: [], unique: false }) => {
    const key = uniqueId(`${id}-i`);
    const names = h('input', {
      id: `${key}-fields`,
      autocomplete: 'off',
      spellcheck: 'false',
      placeholder: 'owner, done',
      value: (index.fields ?? []).join(', '),
      'data-test': 'index-fields',
    });
    const unique = h('input', { type: 'checkbox', id: `${key}-unique`, checked: Boolean(index.unique), 'data-test': 'index-unique' });
    const row = h(
      'div',
      { class: 'schema-row', 'data-test': 'schema-index' },
      h('div', { class: 'field field-index' }, h('label', { for: names.id }, t('schema.indexFields')), names),
      h('label', { class: 'check' }, unique, t('schema.unique')),
      h(
        'button',
        {
          type: 'button',
          class: 'button-small button-quiet',
          'data-test': 'remove-index',
          onclick: () => {
            row.remove();
            changed();
          },
        },
        t('schema.removeIndex'),
      ),
    );
    row.read = () => {
      const fields = names.value.split(',').map((v) => v.trim()).filter(Boolean);
      if (!fields.length) return null; // an empty row is no index
      const out = { fields, unique: unique.checked };
      for (const [k, v] of Object.entries(index)) if (k !== 'fields' && k !== 'unique') out[k] = v;
      return out;
    };
    return row;
  };

  // ---- rules
  const ruleRows = RULES.map((action) => {
    const current = existing?.rules?.[action];
    const modes = current === undefined ? RULE_MODES : RULE_MODES.slice(1);
    const mode0 = current === undefined ? 'default' : current === null ? 'admin' : current.trim() ? 'when' : 'everyone';
    const key = `${id}-rule-${action}`;
    const mode = h(
      'select',
      { id: `${key}-mode`, 'data-test': 'rule-mode', 'data-rule': action },
      modes.map((m) => option(m, t(`rule.mode.${m}`), m === mode0)),
    );
    const input = h('input', {
      id: key,
      class: 'rule-input',
      autocomplete: 'off',
      spellcheck: 'false',
      value: typeof current === 'string' && current.trim() ? current : '',
      placeholder: DEFAULT_RULES[action],
      'aria-label': t('schema.condition', { rule: t(`rule.${action}`) }),
      'data-test': 'rule-input',
      'data-rule': action,
    });
    const place = h('div', { class: 'rule-problem' });
    const fit = () => {
      input.hidden = mode.value !== 'when';
    };
    mode.addEventListener('change', () => {
      fit();
      if (mode.value !== 'when') return;
      if (!input.value.trim()) input.value = DEFAULT_RULES[action];
      input.focus();
    });
    fit();
    const row = h(
      'div',
      { class: 'rule-row', 'data-test': 'rule-editor', 'data-rule': action },
      h('label', { for: mode.id }, t(`rule.${action}`)),
      mode,
      input,
      place,
    );
    /** Shows what is wrong with this rule, with the character at `position` marked. */
    const wrong = (text, position = null) => {
      const errorId = `${key}-error`;
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', errorId);
      let where = null;
      if (position !== null && position !== undefined) {
        // The server counts characters (code points), as Array.from does; the input counts UTF-16 units.
        const chars = Array.from(input.value);
        const at = Math.max(0, Math.min(position, chars.length));
        const before = chars.slice(0, at).join('');
        const goTo = () => {
          input.focus();
          input.setSelectionRange(before.length, before.length + (chars[at]?.length ?? 0));
        };
        where = h(
          'button',
          { type: 'button', class: 'rule-where', title: t('schema.goTo'), onclick: goTo },
          before,
          h('mark', { 'data-test': 'rule-error-at', 'data-position': at }, chars[at] ?? '\u00a0'),
          chars.slice(at + 1).join(''),
        );
      }
      place.replaceChildren(h('div', { class: 'rule-error', id: errorId, 'data-test': 'rule-error', 'data-rule': action }, h('span', {}, text), where));
    };
    const right = () => {
      input.removeAttribute('aria-invalid');
      input.removeAttribute('aria-describedby');
      place.replaceChildren();
    };
    const read = (problems) => {
      if (mode.value === 'default') return undefined;
      if (mode.value === 'admin') return null;
      if (mode.value === 'everyone') return '';
      if (!input.value.trim()) problems.push({ rule: action, message: t('schema.emptyRule') });
      return input.value;
    };
    return { action, row, read, wrong, right };
  });
  const ruleOf = (action) => ruleRows.find((r) => r.action === action);

  // ---- checking
  const setStatus = (text, { valid = null, plan: shown = null, tone = '' } = {}) => {
    status.className = `schema-check ${tone}`.trim();
    for (const [attr, value] of [['data-valid', valid], ['data-plan', shown]]) {
      if (value === null) status.removeAttribute(attr);
      else status.setAttribute(attr, String(value));
    }
    status.textContent = text;
  };
  const sync = () => {
    forceBox.hidden = plan !== 'destroy';
    if (plan !== 'destroy') force.checked = false;
    save.disabled = plan === 'destroy' && !force.checked;
  };
  const clearProblems = () => {
    problem.set();
    ruleRows.forEach((r) => r.right());
    form.querySelectorAll('[aria-invalid]').forEach((el) => el.removeAttribute('aria-invalid'));
  };
  /** The definition in the editor, and what in it cannot be sent. */
  const collect = () => {
    const problems = [];
    const fields = [...fieldRows.children].map((row) => row.read(problems));
    const indexes = [...indexRows.children].map((row) => row.read()).filter(Boolean);
    const rules = {};
    for (const r of ruleRows) {
      const value = r.read(problems);
      if (value !== undefined) rules[r.action] = value;
    }
    return { definition: { fields, indexes, rules }, problems };
  };
  /** Checks the definition now: the answer, with what was checked (null when it could not be). */
  const check = async () => {
    clearTimeout(timer);
    timer = null;
    const mine = ++asked;
    const name = collectionName();
    const { definition, problems } = collect();
    if (problems.length) {
      clearProblems();
      plan = null;
      for (const p of problems) {
        if (p.rule) ruleOf(p.rule).wrong(p.message);
        else p.el.setAttribute('aria-invalid', 'true');
      }
      const first = problems.find((p) => !p.rule);
      if (first) problem.set(errorBanner({ message: first.message }));
      setStatus(t('schema.invalid'), { valid: false, tone: 'schema-bad' });
      sync();
      return null;
    }
    if (!name) {
      clearProblems();
      plan = null;
      setStatus(t('schema.needName'));
      sync();
      return null;
    }
    let answer;
    try {
      answer = await api('POST', `${adminUrl(app, 'collections', name)}/check`, definition);
    } catch (error) {
      if (mine !== asked) return null;
      clearProblems();
      plan = null;
      problem.set(errorBanner(error));
      setStatus(t('schema.failed'), { tone: 'schema-bad' });
      sync();
      return null;
    }
    if (mine !== asked) return null; // the definition changed meanwhile: its own check counts
    clearProblems();
    plan = answer?.valid ? answer.plan : null;
    if (answer?.valid) {
      const tone = plan === 'destroy' ? 'schema-warn' : 'schema-ok';
      setStatus(t(`schema.plan.${plan}`), { valid: true, plan, tone });
    } else {
      const p = answer?.problem ?? {};
      const rule = p.rule ? ruleOf(p.rule) : null;
      if (rule) rule.wrong(p.message, p.position);
      else problem.set(errorBanner({ message: p.message, code: p.code }));
      setStatus(t('schema.invalid'), { valid: false, tone: 'schema-bad' });
    }
    sync();
    return { answer, name, definition };
  };
  /** After a change: checked once typing pauses. */
  const changed = () => {
    asked++;
    // A confirmation is for the change it was given to: any edit asks for it again.
    force.checked = false;
    clearTimeout(timer);
    setStatus(t('schema.checking'), { tone: 'schema-pending' });
    timer = setTimeout(() => form.isConnected && check(), CHECK_DELAY);
  };

  const submit = async () => {
    await busy(form, message, async () => {
      const checked = await check();
      if (!checked?.answer?.valid) return;
      const { answer, name, definition } = checked;
      if (answer.plan === 'destroy' && !force.checked) {
        message.set(errorBanner({ message: t('schema.confirmFirst') }));
        return force.focus();
      }
      const body = answer.plan === 'destroy' ? { ...definition, force: true } : definition;
      const done = await api('PUT', adminUrl(app, 'collections', name), body);
      await saved(t('data.saved', { name: done?.name ?? name }));
    });
    sync();
  };

  const form = h(
    'form',
    {
      class: 'stack schema',
      'data-test': creating ? 'new-collection-form' : 'schema-editor',
      'data-collection': existing?.name,
      novalidate: true,
      onsubmit: onSubmit(submit),
      oninput: (event) => event.target !== force && changed(),
      onchange: (event) => {
        if (event.target === force) sync();
        else if (event.target.tagName === 'SELECT' || event.target.type === 'checkbox') changed();
      },
    },
    message,
    problem,
    nameField,
    h('h3', {}, t('schema.fields')),
    fieldRows,
    h(
      'div',
      { class: 'actions' },
      h(
        'button',
        {
          type: 'button',
          class: 'button-small',
          'data-test': 'add-field',
          onclick: () => {
            const row = fieldRow();
            fieldRows.append(row);
            row.querySelector('input').focus();
            changed();
          },
        },
        `+ ${t('schema.addField')}`,
      ),
    ),
    h('h3', {}, t('data.indexes')),
    h('p', { class: 'muted small-note' }, t('schema.indexesHint')),
    indexRows,
    h(
      'div',
      { class: 'actions' },
      h(
        'button',
        {
          type: 'button',
          class: 'button-small',
          'data-test': 'add-index',
          onclick: () => {
            const row = indexRow();
            indexRows.append(row);
            row.querySelector('input').focus();
            changed();
          },
        },
        `+ ${t('schema.addIndex')}`,
      ),
    ),
    h('h3', {}, t('schema.rules')),
    h('p', { class: 'muted small-note' }, t('schema.rulesHint'), creating ? [h('br'), t('schema.defaultRules')] : null),
    h('div', { class: 'rules' }, ruleRows.map((r) => r.row)),
    status,
    forceBox,
    h(
      'div',
      { class: 'actions' },
      save,
      cancel
        ? h(
            'button',
            {
              type: 'button',
              class: 'button-quiet',
              'data-test': 'schema-cancel',
              onclick: () => {
                asked++;
                clearTimeout(timer);
                cancel();
              },
            },
            t('cancel'),
          )
        : null,
    ),
  );
  fieldRows.append(...(existing?.fields ?? [{ name: '', type: 'text' }]).map(fieldRow));
  indexRows.append(...(existing?.indexes ?? []).map(indexRow));
  if (creating) setStatus(t('schema.needName'));
  else changed();
  return form;
}

function pageCollection({ name, body, role, item }) {
  Promise.all([api('GET', adminUrl(name, 'collections', item)), role]).then(
    ([collection, mine]) => body.set(recordBrowser(name, collection, writer(mine))),
    (error) => body.set(crumb(`#/apps/${path(name)}/data`, t('data.all')), errorBanner(error)),
  );
}

/**
 * A collection's records, 50 a page: a filter and a sort, Next and Previous by the cursors the
 * API answers (cursors[i] opens page i), and for those who may, creating, editing, deleting.
 */
function recordBrowser(app, collection, write) {
  const url = `/v1/apps/${path(app, 'collections', collection.name)}/records`;
  const fields = (collection.fields ?? []).map((f) => f.name);
  const message = slot();
  let filters = {};
  const records = pager(
    'page',
    (cursor) => api('GET', `${url}?${query({ limit: PAGE_SIZE, ...filters, cursor })}`),
    (answer) => answer?.next_cursor,
    (answer, page) => recordsTable(answer?.items ?? [], page + 1),
  );
  const load = () => records.reload();

  const recordsTable = (items, page) => {
    if (!items.length) return h('p', { class: 'muted', 'data-test': 'records', 'data-page': page }, t('data.noRecords'));
    const headers = ['id', ...fields, t('data.created'), t('data.updated')];
    return table({ 'data-test': 'records', 'data-page': page }, write ? [...headers, ''] : headers, items.map(recordRow));
  };

  const recordRow = (record) => {
    const id = record.id;
    const row = h(
      'tr',
      { 'data-test': 'record-row', 'data-id': id },
      h('td', {}, h('code', { 'data-test': 'record-id' }, id)),
      fields.map((f) => h('td', { 'data-test': 'record-field', 'data-field': f }, compact(record[f]))),
      h('td', { class: 'nowrap' }, time(record.created_at, true)),
      h('td', { class: 'nowrap' }, time(record.updated_at, true)),
    );
    if (!write) return row;
    let editor = null;
    const edit = () => {
      if (editor) return editor.querySelector('textarea').focus();
      const editable = Object.fromEntries(fields.map((f) => [f, record[f] ?? null]));
      const problem = slot();
      const close = () => {
        editor.remove();
        editor = null;
      };
      const save = (form) =>
        busy(form, problem, async () => {
          await api('PATCH', `${url}/${path(id)}`, parseObject(form.elements[`edit-${id}`].value));
          message.set(notice(t('data.recordSaved', { id })));
          await load();
        });
      editor = h(
        'tr',
        { class: 'editor', 'data-test': 'record-editor', 'data-id': id },
        h(
          'td',
          { colspan: fields.length + 4 },
          h(
            'form',
            { class: 'stack', onsubmit: onSubmit(save) },
            problem,
            field(
              `edit-${id}`,
              t('data.editLabel', { id }),
              { rows: 6, spellcheck: 'false', value: pretty(editable), 'data-test': 'record-json' },
              null,
              'textarea',
            ),
            h(
              'div',
              { class: 'actions' },
              h('button', { type: 'submit', class: 'button-primary', 'data-test': 'save-record' }, t('data.save')),
              h('button', { type: 'button', class: 'button-quiet', onclick: close }, t('cancel')),
            ),
          ),
        ),
      );
      row.after(editor);
      editor.querySelector('textarea').focus();
    };
    const remove = (area) =>
      busy(area, message, async () => {
        await api('DELETE', `${url}/${path(id)}`);
        message.set(notice(t('data.recordDeleted', { id })));
        await load();
      });
    return append(
      row,
      h(
        'td',
        { class: 'nowrap' },
        h('button', { type: 'button', class: 'button-small', 'data-test': 'edit-record', onclick: edit }, t('data.edit')),
        ' ',
        confirmButton(t('data.delete'), t('data.deleteQuestion'), t('data.deleteYes'), 'delete-record', remove),
      ),
    );
  };

  const search = (form) => {
    filters = { filter: form.elements.filter.value.trim(), sort: form.elements.sort.value.trim() };
    message.set();
    records.load(0);
  };
  const input = (id, label, placeholder) => [
    h('label', { for: id }, label),
    h('input', { id, name: id, placeholder, autocomplete: 'off', spellcheck: 'false', 'data-test': id }),
  ];
  records.load(0);
  return [
    crumb(`#/apps/${path(app)}/data`, t('data.all')),
    h('h2', { 'data-test': 'collection-name' }, collection.name),
    h(
      'form',
      { class: 'toolbar filters', 'data-test': 'filter-form', onsubmit: onSubmit(search) },
      input('filter', t('data.filter'), 'title ~ "milk" && done = false'),
      input('sort', t('data.sort'), '-created_at'),
      h('button', { type: 'submit', 'data-test': 'apply-filter' }, t('data.apply')),
    ),
    message,
    records.list,
    records.bar,
    write ? newRecordForm(url, fields, collection.fields ?? [], message, load) : null,
  ];
}

/** A new record's JSON, prefilled with the collection's fields (their defaults, or empty). */
function newRecordForm(url, names, fields, message, reload) {
  const blank = { text: '', number: 0, integer: 0, bool: false };
  const example = Object.fromEntries(fields.map((f) => [f.name, f.default ?? blank[f.type] ?? null]));
  const problem = slot();
  const submit = (form) =>
    busy(form, problem, async () => {
      const record = await api('POST', url, parseObject(form.elements['new-record'].value));
      message.set(notice(t('data.recordCreated', { id: record?.id ?? '' })));
      await reload();
    });
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('data.newRecord')),
    problem,
    h(
      'form',
      { class: 'stack', 'data-test': 'new-record-form', onsubmit: onSubmit(submit) },
      field(
        'new-record',
        t('data.recordJson'),
        { rows: Math.min(12, names.length + 3), spellcheck: 'false', value: pretty(example), 'data-test': 'new-record' },
        null,
        'textarea',
      ),
      h('button', { type: 'submit', class: 'button-primary', 'data-test': 'new-record-submit' }, t('data.createRecord')),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Files: the app's buckets and their files

/** Raster images, which the server answers inline (anything else is an attachment). */
const RASTER = ['image/jpeg', 'image/png', 'image/gif', 'image/webp', 'image/avif', 'image/bmp'];
/** Those the server makes thumbnails of. */
const THUMBED = RASTER.slice(0, 4);
const FILE_RULES = ['list', 'view', 'create', 'delete'];

function pageFiles({ name, body }) {
  loadInto(body, api('GET', adminUrl(name, 'buckets')), (answer) => {
    const buckets = answer?.buckets ?? [];
    if (!buckets.length) return h('p', { class: 'muted card', 'data-test': 'buckets' }, t('files.none'));
    return h(
      'section',
      { class: 'card' },
      h('h2', {}, t('files.buckets')),
      table(
        { 'data-test': 'buckets' },
        [t('files.bucket'), t('files.types'), t('files.max'), t('files.thumbs')],
        buckets.map((b) =>
          h(
            'tr',
            { 'data-test': 'bucket-row', 'data-bucket': b.name },
            h('td', {}, h('a', { href: `#/apps/${path(name)}/files/${path(b.name)}`, 'data-test': 'bucket-link', 'data-bucket': b.name }, b.name)),
            h('td', {}, codes(b.types)),
            cell(bytes(b.max_bytes)),
            h('td', {}, codes(b.thumbs)),
          ),
        ),
      ),
    );
  });
}

const codes = (list) => (list?.length ? list.map((x, i) => [i ? ' ' : null, h('code', {}, x)]) : h('span', { class: 'muted' }, '—'));

/** A thumbnail size's pixels (a side of 0 follows the other), to find the smallest. */
const thumbArea = (size) => {
  const [w, h0] = size.match(/\d+/g).map(Number);
  return (w || h0) * (h0 || w);
};

function pageBucket({ name, body, role, item }) {
  const back = crumb(`#/apps/${path(name)}/files`, t('files.all'));
  Promise.all([api('GET', adminUrl(name, 'buckets', item)), role]).then(
    ([bucket, mine]) => body.set(back, fileBrowser(name, bucket, writer(mine))),
    (error) => body.set(back, errorBanner(error)),
  );
}

/**
 * A bucket's settings and its files, newest first, 50 a page (so at most 50 previews a page,
 * lazily loaded: a thumbnail of the bucket's smallest size, else the image itself); for
 * developers, uploading and deleting.
 */
function fileBrowser(app, bucket, write) {
  const list = `/v1/apps/${path(app, 'buckets', bucket.name)}/files`;
  const url = `/v1/apps/${path(app, 'files', bucket.name)}`;
  const thumb = [...(bucket.thumbs ?? [])].sort((a, b) => thumbArea(a) - thumbArea(b))[0];
  const message = slot();
  const files = pager(
    'files',
    (cursor) => api('GET', `${list}?${query({ limit: PAGE_SIZE, cursor })}`),
    (answer) => answer?.next_cursor,
    (answer, page) => {
      const items = (answer?.items ?? []).slice(0, PAGE_SIZE);
      if (!items.length) return h('p', { class: 'muted', 'data-test': 'files', 'data-page': page + 1 }, t('files.noFiles'));
      const headers = ['', t('field.name'), t('data.type'), t('files.size'), t('files.owner'), t('data.created')];
      return table({ 'data-test': 'files', 'data-page': page + 1 }, write ? [...headers, ''] : headers, items.map(fileRow));
    },
  );
  const fileRow = (file) => {
    const href = `${url}/${path(file.id)}`;
    const image = RASTER.includes(file.type);
    const src = thumb && THUMBED.includes(file.type) ? `${href}?${query({ thumb })}` : href;
    const remove = (area) =>
      busy(area, message, async () => {
        await api('DELETE', href);
        message.set(notice(t('files.deleted', { name: file.name })));
        await files.reload();
      });
    return h(
      'tr',
      { 'data-test': 'file-row', 'data-id': file.id },
      h(
        'td',
        {},
        image
          ? h('img', { class: 'preview', src, alt: '', width: 48, height: 48, loading: 'lazy', decoding: 'async', 'data-test': 'file-preview' })
          : null,
      ),
      h(
        'td',
        {},
        h('a', { href, 'data-test': 'file-link', target: image ? '_blank' : null, rel: 'noopener', download: image ? null : file.name }, file.name),
        h('br'),
        h('code', { class: 'small muted' }, file.id),
      ),
      h('td', {}, h('code', {}, file.type)),
      cell(bytes(file.size)),
      h('td', {}, codeOr(file.owner)),
      h('td', { class: 'nowrap' }, time(file.created_at, true)),
      write ? h('td', {}, confirmButton(t('data.delete'), t('files.deleteQuestion'), t('data.deleteYes'), 'delete-file', remove)) : null,
    );
  };
  const upload = (form) =>
    busy(form, message, async () => {
      const input = form.elements['upload-input'];
      const data = new FormData();
      data.append('file', input.files[0]);
      const file = await api('POST', url, data);
      form.reset();
      message.set(notice(t('files.uploaded', { name: file?.name ?? '' })));
      await files.load(0);
    });
  files.load(0);
  const rules = bucket.rules ?? {};
  return [
    h(
      'section',
      { class: 'card', 'data-test': 'bucket-details' },
      h('h2', {}, bucket.name),
      h(
        'dl',
        { class: 'details' },
        detailRow(t('files.types'), codes(bucket.types)),
        detailRow(t('files.max'), bytes(bucket.max_bytes)),
        detailRow(t('files.thumbs'), codes(bucket.thumbs)),
        FILE_RULES.map((action) => detailRow(t(`rule.${action}`), ruleText(rules[action]))),
      ),
    ),
    message,
    files.list,
    files.bar,
    write
      ? h(
          'section',
          { class: 'card' },
          h('h2', {}, t('files.upload')),
          h(
            'form',
            { class: 'inline-form', 'data-test': 'upload-form', onsubmit: onSubmit(upload) },
            field('upload-input', t('files.file'), { type: 'file', required: true, 'data-test': 'upload-input' }, t('files.uploadHint', { size: bytes(bucket.max_bytes) })),
            h('button', { type: 'submit', class: 'button-primary', 'data-test': 'upload-submit' }, t('files.send')),
          ),
        )
      : null,
  ];
}

// ---------------------------------------------------------------------------------------------
// Functions

function triggerList(fn) {
  const all = [...(fn.triggers ?? []), ...(fn.schedules ?? [])];
  return all.length
    ? h(
        'ul',
        { class: 'plain', 'data-test': 'function-triggers' },
        all.map((trigger) => h('li', {}, h('code', {}, JSON.stringify(trigger)))),
      )
    : h('span', { class: 'muted', 'data-test': 'function-triggers' }, t('fn.callsOnly'));
}

/** Function names: 1 to 40 of a-z, 0-9, _ and -, starting with a letter (as the server says). */
const FUNCTION_NAME = /^[a-z][a-z0-9_-]{0,39}$/;
const EXAMPLE_FUNCTION = "export default async (event, ctx) => ({ hello: event.name ?? 'world' })\n";
/** The settings a deploy takes besides the sources, `public` and the limits: edited as JSON. */
const OTHER_SETTINGS = ['triggers', 'schedules', 'max_concurrency'];
/** What an invocation's log entry may say of it (cloudlet-core's `Functions::invoke`). */
const LOG_OUTCOMES = ['ok', 'error', 'timeout', 'memory_limit', 'result_too_large'];
const LOG_PAGE = 20;
/** Log rows kept on the page while following (paging with Older may show more). */
const LOG_KEEP = 200;

function pageFunctions({ name, body, role }) {
  loadInto(body, Promise.all([api('GET', adminUrl(name, 'functions')), role]), ([answer, mine]) => [
    writer(mine) ? newFunction(name) : null,
    functionsTable(name, answer?.items ?? []),
  ]);
}

function functionsTable(name, items) {
  if (!items.length) return h('p', { class: 'muted card', 'data-test': 'functions' }, t('fn.none'));
  return table(
    { 'data-test': 'functions' },
    [t('fn.name'), t('fn.version'), t('fn.triggers'), t('fn.updated')],
    items.map((fn) =>
      h(
        'tr',
        { 'data-test': 'function-row', 'data-fn': fn.name },
        h(
          'td',
          {},
          h('a', { href: `#/apps/${path(name)}/functions/${path(fn.name)}`, 'data-test': 'function-link', 'data-fn': fn.name }, fn.name),
          fn.public ? [' ', h('span', { class: 'badge' }, t('fn.public'))] : null,
        ),
        cell(fn.version, 'function-version'),
        h('td', {}, triggerList(fn)),
        h('td', {}, time(fn.updated_at)),
      ),
    ),
  );
}

/** "New function" (developers and owners): a button, then a form that deploys version 1. */
function newFunction(app) {
  const area = slot();
  const closed = () =>
    area.set(h('div', { class: 'actions' }, h('button', { type: 'button', class: 'button-primary', 'data-test': 'new-function', onclick: opened }, t('fn.new'))));
  const opened = () => {
    area.set(newFunctionForm(app, closed));
    area.querySelector('input')?.focus();
  };
  closed();
  return area;
}

function newFunctionForm(app, cancel) {
  const message = slot();
  const submit = (form) =>
    busy(form, message, async () => {
      const name = form.elements['new-function-name'].value.trim();
      if (!FUNCTION_NAME.test(name)) throw new ApiError(0, null, t('fn.badName'));
      const url = adminUrl(app, 'functions', name);
      // A deploy of an existing name would be its new version: this form only creates.
      const exists = await api('GET', url).then(
        () => true,
        (error) => (error.status === 404 ? false : Promise.reject(error)),
      );
      if (exists) throw new ApiError(0, null, t('fn.exists', { name }));
      const answer = await api('PUT', url, {
        source: form.elements['new-function-source'].value,
        public: form.elements['new-function-public'].checked,
      });
      flash = { hash: `#/apps/${path(app)}/functions/${path(name)}`, text: t('fn.created', { name, version: answer?.version ?? 1 }) };
      go(flash.hash);
    });
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('fn.new')),
    h(
      'form',
      { class: 'stack', 'data-test': 'new-function-form', onsubmit: onSubmit(submit) },
      field(
        'new-function-name',
        t('fn.newName'),
        { required: true, autocomplete: 'off', spellcheck: 'false', maxlength: 40, 'data-test': 'new-function-name' },
        t('fn.nameHint'),
      ),
      field(
        'new-function-source',
        t('fn.sourceField'),
        { class: 'code-input', rows: 8, spellcheck: 'false', autocomplete: 'off', wrap: 'off', value: EXAMPLE_FUNCTION, 'data-test': 'new-function-source' },
        null,
        'textarea',
      ),
      h(
        'label',
        { class: 'check' },
        h('input', { type: 'checkbox', id: 'new-function-public', name: 'new-function-public', 'data-test': 'new-function-public' }),
        t('fn.publicLabel'),
      ),
      message,
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'submit', class: 'button-primary', 'data-test': 'new-function-submit' }, t('fn.deploy')),
        h('button', { type: 'button', class: 'button-quiet', 'data-test': 'new-function-cancel', onclick: cancel }, t('cancel')),
      ),
    ),
  );
}

function pageFunction({ name, body, role, item }) {
  const url = adminUrl(name, 'functions', item);
  const message = slot();
  if (flash?.hash === location.hash) message.set(notice(flash.text));
  flash = null;
  const back = () => crumb(`#/apps/${path(name)}/functions`, t('fn.all'));
  // The invoke form and the logs are made once and kept when the rest is shown again after a
  // deploy or a rollback: what was typed, the filter and the Follow stay.
  let kept = null;
  const load = () =>
    Promise.all([api('GET', url), role]).then(
      ([fn, mine]) => {
        const write = writer(mine);
        if (write && !kept) {
          const logs = logsSection(name, item);
          kept = { logs, invoke: invokeForm(name, item, logs) };
        }
        body.set(
          back(),
          h('h2', {}, item),
          message,
          functionDetails(fn),
          kept?.invoke,
          functionSource(name, fn, write ? deployed : null),
          functionVersions(fn, write, rollback),
          kept?.logs,
        );
      },
      (error) => body.set(back(), errorBanner(error)),
    );
  const rollback = (version, el) =>
    busy(el, message, async () => {
      await api('POST', `${url}/rollback`, { version });
      message.set(notice(t('fn.rolledBack', { version })));
      await load();
    });
  const deployed = async (answer) => {
    message.set(notice(t('fn.deployedVersion', { version: answer?.version })));
    await load();
  };
  load();
}

function functionDetails(fn) {
  return h(
    'section',
    { class: 'card', 'data-test': 'function-details' },
    h(
      'dl',
      { class: 'details' },
      detailRow(t('fn.version'), fn.version, 'function-active-version'),
      detailRow(t('fn.access'), t(fn.public ? 'fn.public' : 'fn.private')),
      detailRow(t('fn.limits'), t('fn.limitsValue', { ms: fn.timeout_ms, mb: fn.memory_mb })),
      detailRow(t('fn.triggers'), triggerList(fn)),
      detailRow(t('fn.updated'), time(fn.updated_at)),
    ),
  );
}

/** The active version's files, its entry first: [[name, source], …]. */
function sourceFiles(fn) {
  const files = Object.entries(fn.files ?? {});
  if (!files.length) files.push([fn.entry ?? 'index.js', '']);
  return files.sort(([a], [b]) => (a === fn.entry ? -1 : b === fn.entry ? 1 : a.localeCompare(b)));
}

/** The active version's sources; with `deployed` (developers and owners), "Edit and deploy". */
function functionSource(app, fn, deployed) {
  const card = h('section', { class: 'card' });
  const show = () => {
    const edit = deployed
      ? h('button', { type: 'button', class: 'button-small', 'data-test': 'edit-function', onclick: open }, t('fn.edit'))
      : null;
    card.replaceChildren();
    append(
      card,
      cardHead(t('fn.source', { version: fn.version }), edit),
      sourceFiles(fn).map(([file, source]) => [
        h('p', { class: 'muted file-name' }, h('code', {}, file), file === fn.entry ? ` · ${t('fn.entry')}` : null),
        h('pre', { class: 'source', 'data-test': 'function-source', 'data-file': file }, h('code', {}, source)),
      ]),
    );
  };
  const open = () => {
    const editor = deployForm(app, fn, { deployed, cancel: show });
    card.replaceChildren(cardHead(t('fn.edit'), h('span', { class: 'muted' }, t('fn.fromVersion', { version: fn.version }))), editor);
    editor.querySelector('textarea')?.focus();
  };
  show();
  return card;
}

/**
 * The editor of a function's next version, prefilled with the active one: the files' sources
 * (one at a time, each file's text kept while another is shown), `public`, the limits, and the
 * other settings as JSON. Deploying puts them all; `deployed(answer)` runs after.
 */
function deployForm(app, fn, { deployed, cancel }) {
  const message = slot();
  const files = Object.fromEntries(sourceFiles(fn));
  const names = Object.keys(files);
  const entry = fn.entry ?? names[0];
  let current = Object.hasOwn(files, entry) ? entry : names[0];
  const other = { triggers: fn.triggers ?? [], schedules: fn.schedules ?? [] };
  if (fn.max_concurrency !== undefined && fn.max_concurrency !== null) other.max_concurrency = fn.max_concurrency;
  const choose = (event) => {
    const source = event.currentTarget.form.elements['deploy-source'];
    files[current] = source.value;
    current = event.currentTarget.value;
    source.value = files[current];
    source.setAttribute('data-file', current);
  };
  const submit = (form) =>
    busy(form, message, async () => {
      files[current] = form.elements['deploy-source'].value;
      const more = parseObject(form.elements['deploy-settings'].value);
      const unknown = Object.keys(more).filter((key) => !OTHER_SETTINGS.includes(key));
      if (unknown.length) throw new ApiError(0, 'invalid_json', t('fn.settingsKeys', { keys: unknown.join(', ') }));
      const answer = await api('PUT', adminUrl(app, 'functions', fn.name), {
        ...more,
        files: { ...files },
        entry,
        public: form.elements['deploy-public'].checked,
        timeout_ms: Number(form.elements['deploy-timeout'].value),
        memory_mb: Number(form.elements['deploy-memory'].value),
      });
      await deployed(answer);
    });
  /** Rows enough for the longest of `texts` (and one to type on), from `least` to `most`. */
  const rowsFor = (texts, least, most) => Math.min(most, Math.max(least, ...texts.map((text) => String(text).split('\n').length + 1)));
  const number = (id, label, value) =>
    field(id, t(label), { type: 'number', min: 1, step: 1, required: true, value: String(value ?? ''), 'data-test': id });
  return h(
    'form',
    { class: 'stack', 'data-test': 'deploy-form', onsubmit: onSubmit(submit) },
    names.length > 1
      ? selectField(
          'deploy-file',
          t('fn.file'),
          names.map((file) => option(file, file === entry ? `${file} · ${t('fn.entry')}` : file, file === current)),
          { 'data-test': 'deploy-file', onchange: choose },
        )
      : null,
    field(
      'deploy-source',
      names.length > 1 ? t('fn.sourceField') : [t('fn.sourceField'), ' ', h('code', { class: 'muted' }, current)],
      { class: 'code-input', rows: rowsFor(Object.values(files), 8, 30), spellcheck: 'false', autocomplete: 'off', wrap: 'off', value: files[current], 'data-test': 'deploy-source', 'data-file': current },
      null,
      'textarea',
    ),
    h(
      'div',
      { class: 'grid-form' },
      number('deploy-timeout', 'fn.timeout', fn.timeout_ms),
      number('deploy-memory', 'fn.memory', fn.memory_mb),
      h(
        'div',
        { class: 'field field-end' },
        h(
          'label',
          { class: 'check' },
          h('input', { type: 'checkbox', id: 'deploy-public', name: 'deploy-public', checked: Boolean(fn.public), 'data-test': 'deploy-public' }),
          t('fn.publicLabel'),
        ),
      ),
    ),
    field(
      'deploy-settings',
      t('fn.settingsJson'),
      { rows: rowsFor([pretty(other)], 3, 16), spellcheck: 'false', autocomplete: 'off', value: pretty(other), 'data-test': 'deploy-settings' },
      t('fn.settingsHint'),
      'textarea',
    ),
    message,
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'submit', class: 'button-primary', 'data-test': 'deploy-submit' }, t('fn.deploy')),
      h('button', { type: 'button', class: 'button-quiet', 'data-test': 'deploy-cancel', onclick: cancel }, t('cancel')),
    ),
  );
}

function functionVersions(fn, write, rollback) {
  const rows = (fn.versions ?? []).map((v) => {
    const action = h('td', {});
    if (v.active) action.append(h('span', { class: 'badge badge-developer' }, t('fn.active')));
    else if (write) {
      action.append(
        h(
          'button',
          {
            type: 'button',
            class: 'button-small',
            'data-test': 'rollback',
            'data-version': v.version,
            onclick: () => rollback(v.version, action),
          },
          t('fn.rollback'),
        ),
      );
    }
    return h(
      'tr',
      { 'data-test': 'version-row', 'data-version': v.version, 'data-active': String(v.active) },
      cell(v.version),
      h('td', {}, time(v.created_at)),
      action,
    );
  });
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('fn.versions')),
    table({ 'data-test': 'versions' }, [t('fn.version'), t('fn.deployed'), ''], rows),
  );
}

function invokeForm(app, name, logs) {
  const output = slot();
  const submit = (form) =>
    busy(form, output, async () => {
      const result = await api('POST', `/v1/apps/${path(app, 'functions', name)}`, parseObject(form.elements['invoke-event'].value));
      output.set(h('p', { class: 'muted' }, t('fn.result')), h('pre', { class: 'source', 'data-test': 'invoke-result' }, pretty(result)));
    }).then(() => logs.reloadSoon()); // the log is written a few milliseconds after the call
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('fn.invoke')),
    h(
      'form',
      { class: 'stack', 'data-test': 'invoke-form', onsubmit: onSubmit(submit) },
      field(
        'invoke-event',
        t('fn.event'),
        { rows: 4, spellcheck: 'false', value: '{}', 'data-test': 'invoke-event' },
        t('fn.eventHint'),
        'textarea',
      ),
      h('button', { type: 'submit', class: 'button-primary', 'data-test': 'invoke-submit' }, t('fn.invokeSubmit')),
    ),
    output,
  );
}

/**
 * A function's latest log entries (newest first), filtered by outcome, with Older (the page
 * before the oldest row shown) and Follow (new entries over the console's socket, which sends
 * all of the function's: those the filter leaves out are not shown).
 */
function logsSection(app, name) {
  const list = slot();
  const message = slot();
  list.set(loading());
  const outcome = h(
    'select',
    { id: 'logs-outcome', class: 'select-small', 'data-test': 'logs-outcome', onchange: () => load() },
    option('', t('fn.allOutcomes')),
    LOG_OUTCOMES.map((o) => option(o, t(`fn.o.${o}`))),
  );
  const older = h('button', { type: 'button', class: 'button-small', hidden: true, 'data-test': 'logs-older', onclick: () => more() }, t('fn.older'));
  const logsUrl = (before = null) => `${adminUrl(app, 'logs')}?${query({ function: name, outcome: outcome.value, before, limit: LOG_PAGE })}`;
  const matches = (entry) => !outcome.value || entry.outcome === outcome.value;
  let last = null; // the highest id seen (null: not loaded yet)
  let rows = null; // the table's body, once there is one
  let live = null; // the console's socket, while following
  let loads = 0; // the latest load: an earlier one's answer (another filter) is dropped
  const row = (entry) =>
    h(
      'tr',
      { 'data-test': 'log-row', 'data-id': entry.id, 'data-outcome': entry.outcome },
      h('td', { class: 'nowrap' }, time(entry.at, true)),
      cell(entry.version),
      h('td', {}, entry.trigger),
      h('td', { class: entry.outcome === 'ok' ? 'status-ok' : 'status-bad' }, entry.outcome),
      cell(`${((entry.micros ?? 0) / 1000).toFixed(1)} ms`),
      h('td', {}, logOutput(entry)),
    );
  /** Puts `items` (newest first) on top of the rows shown, keeping the newest LOG_KEEP. */
  const show = (items) => {
    if (!items.length) return;
    last = Math.max(last ?? 0, items[0].id);
    if (!rows) {
      const shown = table({ 'data-test': 'logs' }, [t('fn.at'), t('fn.version'), t('fn.trigger'), t('fn.outcome'), t('fn.duration'), t('fn.output')], []);
      rows = shown.querySelector('tbody');
      list.set(shown);
    }
    rows.prepend(...items.map(row));
    if (rows.children.length > LOG_KEEP) {
      while (rows.children.length > LOG_KEEP) rows.lastChild.remove();
      older.hidden = false;
    }
  };
  const load = () => {
    const mine = ++loads;
    older.hidden = true;
    return api('GET', logsUrl()).then(
      (answer) => {
        if (mine !== loads) return;
        const items = answer?.items ?? [];
        rows = null;
        last = items[0]?.id ?? 0;
        if (items.length) show(items);
        else list.set(h('p', { class: 'muted' }, t(outcome.value ? 'fn.noMatchingLogs' : 'fn.noLogs')));
        older.hidden = items.length < LOG_PAGE;
      },
      (error) => {
        if (mine !== loads) return;
        rows = last = null;
        list.set(errorBanner(error));
        refused(error);
      },
    );
  };
  /** The page of entries older than the oldest row shown, under them. */
  const more = async () => {
    const oldest = rows?.lastElementChild?.getAttribute('data-id');
    if (!oldest) return;
    const mine = loads;
    older.disabled = true;
    message.set();
    try {
      const items = (await api('GET', logsUrl(oldest)))?.items ?? [];
      if (mine !== loads || !rows) return; // shown again meanwhile
      append(rows, items.map(row));
      older.hidden = items.length < LOG_PAGE;
    } catch (error) {
      message.set(errorBanner(error));
      refused(error);
    } finally {
      older.disabled = false;
    }
  };
  const refused = (error) => (error.status === 401 || error.status === 403) && stop();
  const stop = () => {
    clearTimeout(soon);
    live?.close();
    live = null;
    if (leave === stop) leave = null;
    follow.setAttribute('aria-pressed', 'false');
    follow.className = 'button-small';
    follow.textContent = t('fn.follow');
  };
  // Following: the server sends each new entry (oldest first) over the console's socket.
  const heard = (m) => {
    if (m.type === 'logs') {
      const fresh = (m.items ?? []).filter((e) => e.id > (last ?? 0));
      if (fresh.length) last = Math.max(last ?? 0, ...fresh.map((e) => e.id));
      show(fresh.filter(matches).reverse());
    } else if (m.type === 'error') message.set(errorBanner(new ApiError(400, m.code, m.message)));
    else if (m.type === 'closed') {
      if (m.code !== 1000) message.set(errorBanner(new ApiError(0, m.reason || 'closed', t('rt.socketClosed'))));
      stop();
    }
  };
  const follow = h('button', { type: 'button', 'data-test': 'logs-follow', onclick: () => (live ? stop() : start()) });
  const start = () => {
    leave?.();
    leave = stop;
    clearTimeout(soon);
    message.set();
    live = liveSocket(app, heard);
    // Filtered, with no entry shown: from the newest entry (not through all the others).
    live.send({ type: 'tail', function: name, after: outcome.value && !last ? undefined : last ?? undefined });
    follow.setAttribute('aria-pressed', 'true');
    follow.className = 'button-small button-primary';
    follow.textContent = t('fn.following');
  };
  const section = h(
    'section',
    { class: 'card', 'data-test': 'logs-section' },
    cardHead(
      t('fn.logs'),
      h('label', { for: 'logs-outcome', class: 'muted label-small' }, t('fn.logOutcome')),
      outcome,
      follow,
      h('button', { type: 'button', class: 'button-small', 'data-test': 'logs-refresh', onclick: () => load() }, t('refresh')),
    ),
    message,
    list,
    h('div', { class: 'actions' }, older),
  );
  // After an invoke here: its entry, once written (unless following: it comes anyway). Following
  // started or stopped since makes it moot: what it would show came or is not wanted.
  let soon = null;
  section.reloadSoon = () => {
    clearTimeout(soon);
    soon = setTimeout(() => live || load(), 500);
  };
  stop();
  load();
  return section;
}

/** What an invocation printed, and its error. */
function logOutput(entry) {
  const error = entry.error;
  const lines = (entry.logs ?? []).map((line) => `[${line.level}] ${line.message}`);
  if (error) lines.push(typeof error === 'string' ? error : error.message ?? JSON.stringify(error));
  return lines.length ? h('pre', { class: 'log-lines' }, lines.join('\n')) : null;
}

// ---------------------------------------------------------------------------------------------
// Queues

function pageQueues({ name, body }) {
  const list = slot();
  list.set(loading());
  const load = () =>
    loadInto(list, api('GET', adminUrl(name, 'queues')), (answer) => {
      const items = answer?.items ?? [];
      if (!items.length) return h('p', { class: 'muted', 'data-test': 'queues' }, t('q.none'));
      return table(
        { 'data-test': 'queues' },
        [t('q.name'), t('q.ready'), t('q.inFlight'), t('q.delayed'), t('q.dead')],
        items.map((q) =>
          h(
            'tr',
            { 'data-test': 'queue-row', 'data-queue': q.name },
            h('td', {}, h('a', { href: `#/apps/${path(name)}/queues/${path(q.name)}`, 'data-test': 'queue-link', 'data-queue': q.name }, q.name)),
            cell(q.ready, 'queue-ready'),
            cell(q.in_flight, 'queue-in-flight'),
            cell(q.delayed, 'queue-delayed'),
            cell(q.dead, 'queue-dead'),
          ),
        ),
      );
    });
  body.set(
    h(
      'section',
      { class: 'card' },
      cardHead(t('q.title'), h('button', { type: 'button', class: 'button-small', 'data-test': 'queues-refresh', onclick: load }, t('refresh'))),
      list,
    ),
  );
  load();
}

function pageQueue({ name, body, role, item }) {
  const url = adminUrl(name, 'queues', item);
  const message = slot();
  const back = crumb(`#/apps/${path(name)}/queues`, t('q.all'));
  // The messages may be refused to a role that sees the counts (they carry what users sent).
  const load = () =>
    Promise.all([api('GET', url), api('GET', `${url}/messages?state=dead&limit=100`).catch((error) => error), role]).then(
      ([queue, dead, mine]) => body.set(back, h('h2', {}, item), message, queueDetails(queue), deadLetters(url, dead, writer(mine), message, load)),
      (error) => body.set(back, errorBanner(error)),
    );
  load();
}

function queueDetails(q) {
  const s = q.settings ?? {};
  return h(
    'section',
    { class: 'card', 'data-test': 'queue-details' },
    h(
      'dl',
      { class: 'details' },
      detailRow(t('q.ready'), q.ready, 'queue-ready'),
      detailRow(t('q.inFlight'), q.in_flight, 'queue-in-flight'),
      detailRow(t('q.delayed'), q.delayed, 'queue-delayed'),
      detailRow(t('q.dead'), q.dead, 'queue-dead'),
      detailRow(t('q.attempts'), s.max_attempts),
      detailRow(t('q.visibility'), t('q.seconds', { n: s.visibility_timeout_secs })),
      detailRow(t('q.retention'), t('q.seconds', { n: s.retention_secs })),
    ),
  );
}

function deadLetters(url, answer, write, message, reload) {
  const refused = answer instanceof ApiError ? answer : null;
  const items = refused ? [] : answer?.items ?? [];
  /** Runs a change to the queue, says how it went, shows the queue again. */
  const change = (el, work) =>
    busy(el, message, async () => {
      message.set(notice(await work()));
      await reload();
    });
  const replay = (el, ids) =>
    change(el, async () => t('q.replayed', { n: (await api('POST', `${url}/replay`, ids ? { ids } : {}))?.replayed ?? 0 }));
  const rows = items.map((m) => {
    const action = write
      ? h(
          'td',
          {},
          h(
            'button',
            { type: 'button', class: 'button-small', 'data-test': 'replay', 'data-id': m.id, onclick: (e) => replay(e.currentTarget.parentNode, [m.id]) },
            t('q.replay'),
          ),
        )
      : null;
    return h(
      'tr',
      { 'data-test': 'dead-row', 'data-id': m.id },
      h('td', {}, h('code', {}, m.id)),
      cell(`${m.attempt}/${m.max_attempts}`),
      h('td', { class: 'status-bad', 'data-test': 'dead-error' }, m.last_error ?? '—'),
      h('td', { class: 'nowrap' }, time(m.sent_at, true)),
      h('td', {}, h('code', {}, compact(m.payload))),
      action,
    );
  });
  const headers = [t('q.message'), t('q.attempts'), t('q.lastError'), t('q.sent'), t('q.payload')];
  const state = h(
    'select',
    { id: 'purge-state', 'data-test': 'purge-state' },
    ['dead', 'waiting', ''].map((s) => option(s, t(`q.purge.${s || 'all'}`))),
  );
  const purge = (area) =>
    change(area, async () => {
      const which = state.value ? `?state=${state.value}` : '';
      return t('q.purged', { n: (await api('DELETE', `${url}/messages${which}`))?.purged ?? 0 });
    });
  return [
    h(
      'section',
      { class: 'card', 'data-test': 'dead-letters' },
      cardHead(
        t('q.deadLetters'),
        write && items.length
          ? h(
              'button',
              { type: 'button', class: 'button-small', 'data-test': 'replay-all', onclick: (e) => replay(e.currentTarget.parentNode) },
              t('q.replayAll'),
            )
          : null,
      ),
      refused?.status === 403
        ? h('p', { class: 'muted', 'data-test': 'dead-hidden' }, t('q.deadHidden'))
        : refused
          ? errorBanner(refused)
          : items.length
            ? table({ 'data-test': 'dead' }, write ? [...headers, ''] : headers, rows)
            : h('p', { class: 'muted', 'data-test': 'dead' }, t('q.noDead')),
    ),
    write
      ? h(
          'section',
          { class: 'card card-danger' },
          h('h2', {}, t('q.purge')),
          h(
            'div',
            { class: 'toolbar' },
            h('label', { for: 'purge-state' }, t('q.purgeWhich')),
            state,
            confirmButton(t('q.purge'), t('q.purgeQuestion'), t('q.purgeYes'), 'purge', purge),
          ),
        )
      : null,
  ];
}

// ---------------------------------------------------------------------------------------------
// Users: the app's end users, their login identities and sessions (developers and owners)

/** A message for the next page, shown once if it is the one: { hash, text }. */
let flash = null;

function pageUsers({ name, body }) {
  const url = adminUrl(name, 'users');
  const message = slot();
  if (flash?.hash === location.hash) message.set(notice(flash.text));
  flash = null;
  let search = '';
  const users = pager(
    'users',
    (after) => api('GET', `${url}?${query({ limit: PAGE_SIZE, search, after })}`),
    (answer) => answer?.next_after,
    (answer) => usersTable(name, answer?.items ?? [], search),
  );
  const submit = (form) => {
    search = form.elements['user-search'].value.trim();
    message.set();
    users.load(0);
  };
  body.set(
    h(
      'form',
      { class: 'toolbar filters', role: 'search', onsubmit: onSubmit(submit) },
      h('label', { for: 'user-search' }, t('users.search')),
      h('input', {
        id: 'user-search',
        name: 'user-search',
        type: 'search',
        autocomplete: 'off',
        spellcheck: 'false',
        maxlength: 256,
        title: t('users.searchHint'),
        'aria-describedby': 'user-search-hint',
        'data-test': 'user-search',
      }),
      h('button', { type: 'submit', 'data-test': 'user-search-submit' }, t('users.search')),
      h('small', { id: 'user-search-hint', class: 'muted' }, t('users.searchHint')),
    ),
    message,
    users.list,
    users.bar,
  );
  users.load(0);
}

function usersTable(app, users, search) {
  if (!users.length) return h('p', { class: 'muted', 'data-test': 'users' }, t(search ? 'users.noMatch' : 'users.none'));
  const orNone = (value) => value ?? h('span', { class: 'muted' }, '—');
  return table(
    { 'data-test': 'users' },
    [t('users.id'), t('field.email'), t('users.phone'), t('users.profile'), t('data.created'), t('users.lastLogin')],
    users.map((user) =>
      h(
        'tr',
        { 'data-test': 'user-row', 'data-id': user.id },
        h('td', {}, h('a', { href: `#/apps/${path(app)}/users/${path(user.id)}`, 'data-test': 'user-link' }, h('code', {}, user.id))),
        h('td', {}, orNone(user.email)),
        h('td', { class: 'nowrap' }, orNone(user.phone)),
        h('td', {}, profileOf(user)),
        h('td', { class: 'nowrap' }, time(user.created_at)),
        h('td', { class: 'nowrap' }, time(user.last_login_at)),
      ),
    ),
  );
}

const profileOf = (user) =>
  user.profile && Object.keys(user.profile).length ? compact(user.profile) : h('span', { class: 'muted' }, '—');

function pageUser({ name, body, item }) {
  const url = adminUrl(name, 'users', item);
  const back = crumb(`#/apps/${path(name)}/users`, t('users.all'));
  const message = slot();
  const sessions = slot();
  sessions.set(loading());
  const loadSessions = () =>
    loadInto(sessions, api('GET', `${url}/sessions`), (answer) => sessionsTable(name, listOf(answer), message, loadSessions));
  const remove = (area) =>
    busy(area, message, async () => {
      await api('DELETE', url);
      flash = { hash: `#/apps/${path(name)}/users`, text: t('users.deleted', { id: item }) };
      go(flash.hash);
    });
  api('GET', url).then(
    (user) => {
      body.set(
        back,
        h('h2', {}, h('code', {}, user.id)),
        message,
        h(
          'section',
          { class: 'card', 'data-test': 'user-details' },
          h(
            'dl',
            { class: 'details' },
            detailRow(t('field.email'), user.email ?? '—'),
            detailRow(t('users.phone'), user.phone ?? '—'),
            detailRow(t('data.created'), time(user.created_at)),
            detailRow(t('users.lastLogin'), time(user.last_login_at)),
            detailRow(t('users.profile'), profileOf(user)),
          ),
        ),
        identitiesSection(user.identities ?? []),
        h(
          'section',
          { class: 'card' },
          cardHead(t('users.sessions'), h('button', { type: 'button', class: 'button-small', onclick: () => loadSessions() }, t('refresh'))),
          sessions,
        ),
        h(
          'section',
          { class: 'card card-danger' },
          h('h2', {}, t('users.delete')),
          h('p', { class: 'warning' }, t('users.deleteWarning')),
          confirmButton(t('users.delete'), t('users.deleteQuestion'), t('users.deleteYes'), 'delete-user', remove),
        ),
      );
      loadSessions();
    },
    (error) => body.set(back, errorBanner(error)),
  );
}

function identitiesSection(identities) {
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('users.identities')),
    identities.length
      ? table(
          { 'data-test': 'identities' },
          [t('users.provider'), t('users.subject'), 'unionid', t('users.linked')],
          identities.map((i) =>
            h(
              'tr',
              { 'data-test': 'identity-row', 'data-provider': i.provider },
              h('td', {}, h('code', {}, i.provider)),
              h('td', {}, h('code', { 'data-test': 'identity-subject' }, i.subject)),
              h('td', {}, i.unionid ? h('code', {}, i.unionid) : h('span', { class: 'muted' }, '—')),
              h('td', { class: 'nowrap' }, time(i.created_at)),
            ),
          ),
        )
      : h('p', { class: 'muted', 'data-test': 'identities' }, t('users.noIdentities')),
  );
}

function sessionsTable(app, sessions, message, reload) {
  if (!sessions.length) return h('p', { class: 'muted', 'data-test': 'sessions' }, t('users.noSessions'));
  const now = Date.now();
  const rows = sessions.map((s) => {
    const revoked = Boolean(s.revoked_at);
    const live = !revoked && new Date(s.expires_at).getTime() > now;
    const revoke = (area) =>
      busy(area, message, async () => {
        await api('DELETE', adminUrl(app, 'sessions', s.id));
        message.set(notice(t('users.revokedNotice')));
        await reload();
      });
    const state = revoked
      ? h('span', { class: 'status-bad' }, t('users.revoked'), ' ', time(s.revoked_at))
      : h('span', { class: live ? 'status-ok' : 'muted' }, t(live ? 'users.live' : 'users.expired'));
    return h(
      'tr',
      { 'data-test': 'session-row', 'data-id': s.id, 'data-revoked': String(revoked) },
      h('td', {}, h('code', {}, s.id)),
      h('td', {}, h('code', {}, s.provider)),
      h('td', { class: 'nowrap' }, time(s.created_at)),
      h('td', { class: 'nowrap' }, time(s.refreshed_at)),
      h('td', { class: 'nowrap' }, time(s.expires_at)),
      h('td', {}, state),
      h(
        'td',
        { class: 'nowrap' },
        live ? confirmButton(t('users.revoke'), t('users.revokeQuestion'), t('users.revokeYes'), 'revoke-session', revoke, { 'data-id': s.id }) : null,
      ),
    );
  });
  return table(
    { 'data-test': 'sessions' },
    [t('users.session'), t('users.provider'), t('data.created'), t('users.refreshed'), t('users.expires'), t('users.state'), ''],
    rows,
  );
}

// ---------------------------------------------------------------------------------------------
// Shared by payments, realtime and settings

/**
 * A list paged by cursor: `get(cursor)` fetches a page, `next(answer)` is the next page's
 * cursor, `show(answer, page)` what to show. `load(0)` (re)starts at the first page.
 */
function pager(test, get, next, show) {
  const list = slot();
  const cursors = [null];
  let page = 0;
  let loads = 0;
  const where = h('span', { class: 'muted', 'data-test': `${test}-number` });
  const move = (step, text) => h('button', { type: 'button', 'data-test': `${test}-${step > 0 ? 'next' : 'prev'}`, onclick: () => load(page + step) }, text);
  const prev = move(-1, `← ${t('data.prev')}`);
  const after = move(1, `${t('data.next')} →`);
  const bar = h('div', { class: 'actions', hidden: true }, prev, after, where);
  const load = async (to) => {
    const mine = ++loads;
    if (!to) cursors.length = 1;
    if (!to) page = 0;
    prev.disabled = after.disabled = true;
    bar.hidden = false;
    list.set(loading());
    let shown;
    try {
      const answer = await get(cursors[to]);
      page = to;
      cursors.length = to + 1;
      cursors.push(next(answer) ?? null);
      shown = show(answer, to);
    } catch (error) {
      shown = errorBanner(error);
    }
    if (mine !== loads) return;
    list.set(shown);
    prev.disabled = page === 0;
    after.disabled = !cursors[page + 1];
    where.textContent = t('data.page', { page: page + 1 });
  };
  return { list, bar, load, reload: () => load(page) };
}

const query = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== ''));
const codeOr = (value) => (value ? h('code', {}, value) : '—');
const refreshButton = (load) => h('button', { type: 'button', class: 'button-small', onclick: () => load() }, t('refresh'));
const unfold = (summary, value) =>
  h('details', {}, h('summary', {}, summary), h('pre', { class: 'log-lines' }, typeof value === 'string' ? value : pretty(value)));

// ---------------------------------------------------------------------------------------------
// Payments: orders, refunds, callbacks, reconciliation (developers; refunds: owners)

const ORDER_STATES = ['created', 'paid', 'partly_refunded', 'refunded', 'closed'];

const money = (fen) => new Intl.NumberFormat(lang, { style: 'currency', currency: 'CNY' }).format((Number(fen) || 0) / 100);
const payState = (state) => h('span', { class: `badge pay-${state}`, 'data-test': 'pay-state' }, t(`ps.${state}`));
const orderLink = (app, id) => h('a', { href: `#/apps/${path(app)}/payments/${path(id)}`, 'data-test': 'order-link' }, h('code', {}, id));
const userLink = (app, id) => (id ? h('a', { href: `#/apps/${path(app)}/users/${path(id)}` }, h('code', {}, id)) : '—');

function pagePayments({ name, body }) {
  const url = adminUrl(name, 'pay', 'orders');
  let filter = {};
  const orders = pager(
    'orders',
    (cursor) => api('GET', `${url}?${query({ ...filter, cursor, limit: PAGE_SIZE })}`),
    (answer) => answer?.next_cursor,
    (answer) => ordersTable(name, answer?.items ?? []),
  );
  const search = (form) => {
    filter = { state: form.elements['orders-state'].value, user: form.elements['orders-user'].value.trim() };
    orders.load(0);
  };
  body.set(
    h(
      'section',
      { class: 'card' },
      h('h2', {}, t('pay.orders')),
      h(
        'form',
        { class: 'toolbar filters', onsubmit: onSubmit(search) },
        h('label', { for: 'orders-state' }, t('users.state')),
        h('select', { id: 'orders-state', 'data-test': 'orders-state' }, option('', t('pay.allStates')), ORDER_STATES.map((s) => option(s, t(`ps.${s}`)))),
        h('label', { for: 'orders-user' }, t('users.id')),
        h('input', { id: 'orders-user', maxlength: 64, autocomplete: 'off', spellcheck: 'false', placeholder: 'usr_…', 'data-test': 'orders-user' }),
        h('button', { type: 'submit', 'data-test': 'orders-apply' }, t('data.apply')),
      ),
      orders.list,
      orders.bar,
    ),
    callbacksSection(name),
    reportsSection(name),
  );
  orders.load(0);
}

function ordersTable(app, orders) {
  if (!orders.length) return h('p', { class: 'muted', 'data-test': 'orders' }, t('none'));
  return table(
    { 'data-test': 'orders' },
    [t('pay.order'), t('users.state'), t('pay.amount'), t('ps.refunded'), t('users.id'), t('pay.description'), t('data.created')],
    orders.map((o) =>
      h(
        'tr',
        { 'data-test': 'order-row', 'data-id': o.id, 'data-state': o.state },
        h('td', {}, orderLink(app, o.id), ' ', h('span', { class: 'muted' }, o.provider)),
        h('td', {}, payState(o.state)),
        cell(money(o.amount_fen)),
        cell(o.refunded_fen ? money(o.refunded_fen) : '—'),
        h('td', {}, userLink(app, o.user_id)),
        h('td', {}, o.description),
        h('td', { class: 'nowrap' }, time(o.created_at)),
      ),
    ),
  );
}

function callbacksSection(app, order = null) {
  const url = adminUrl(app, 'pay', 'callbacks');
  const message = slot();
  const list = slot();
  list.set(loading());
  const load = () =>
    loadInto(list, api('GET', `${url}?${query({ order })}`), (answer) => {
      const items = answer?.items ?? [];
      if (!items.length) return h('p', { class: 'muted', 'data-test': 'callbacks' }, t('none'));
      return table(
        { 'data-test': 'callbacks' },
        ['id', t('pay.provider'), t('pay.order'), t('fn.outcome'), t('pay.handled'), t('fn.at'), ''],
        items.map((c) => {
          const action = h('td', {});
          const replay = () =>
            busy(action, message, async () => {
              const answer = await api('POST', `${url}/${path(c.id)}/replay`, {});
              message.set(notice(`${t('done')} ${answer?.outcome ?? ''}`));
              await load();
            });
          const button = { type: 'button', class: 'button-small', 'data-test': 'replay-callback', 'data-id': c.id, onclick: replay };
          append(action, h('button', button, t('q.replay')));
          return h(
            'tr',
            { 'data-test': 'callback-row', 'data-id': c.id, 'data-outcome': c.outcome },
            h('td', {}, unfold(h('code', {}, c.id), c.body)),
            h('td', {}, c.provider),
            h('td', {}, c.order_id ? orderLink(app, c.order_id) : '—'),
            h('td', { class: /^refused/.test(c.outcome) ? 'status-bad' : 'status-ok', 'data-test': 'callback-outcome' }, c.outcome),
            cell(c.handled),
            h('td', { class: 'nowrap' }, time(c.received_at, true)),
            action,
          );
        }),
      );
    });
  load();
  return h('section', { class: 'card' }, cardHead(t('pay.callbacks'), refreshButton(load)), message, list);
}

function reportsSection(app) {
  const url = adminUrl(app, 'pay', 'reconciliations');
  const message = slot();
  const list = slot();
  const report = slot();
  list.set(loading());
  const show = (provider, date) => {
    report.set(loading());
    loadInto(report, api('GET', `${url}/${path(provider, date)}`), (answer) => reportView(app, answer));
  };
  const load = () =>
    loadInto(list, api('GET', url), (answer) => {
      const items = answer?.items ?? [];
      if (!items.length) return h('p', { class: 'muted', 'data-test': 'reports' }, t('none'));
      return table(
        { 'data-test': 'reports' },
        [t('pay.day'), t('pay.provider'), t('pay.differences'), t('pay.checked'), ''],
        items.map((r) =>
          h(
            'tr',
            { 'data-test': 'report-row', 'data-provider': r.provider, 'data-date': r.bill_date },
            h('td', { class: 'nowrap' }, r.bill_date),
            h('td', {}, r.provider),
            h('td', { class: `num ${r.differences ? 'status-bad' : 'status-ok'}` }, r.differences),
            h('td', { class: 'nowrap' }, time(r.checked_at)),
            h(
              'td',
              {},
              h('button', { type: 'button', class: 'button-small', 'data-test': 'show-report', onclick: () => show(r.provider, r.bill_date) }, t('show')),
            ),
          ),
        ),
      );
    });
  const compare = (form) =>
    busy(form, message, async () => {
      report.set();
      const answer = await api('POST', url, { provider: form.elements['reconcile-provider'].value, date: form.elements['reconcile-date'].value });
      report.set(reportView(app, answer));
      await load();
    });
  // Yesterday in China, where the platforms' days are.
  const yesterday = new Date(Date.now() + 8 * 3600e3 - 864e5).toISOString().slice(0, 10);
  load();
  return h(
    'section',
    { class: 'card' },
    cardHead(t('pay.reports'), refreshButton(load)),
    list,
    message,
    h(
      'form',
      { class: 'grid-form', onsubmit: onSubmit(compare) },
      selectField('reconcile-provider', t('pay.provider'), [option('wechat', t('p.wechat')), option('alipay', t('p.alipay'))], {
        'data-test': 'reconcile-provider',
      }),
      field('reconcile-date', t('pay.day'), { type: 'date', required: true, value: yesterday, 'data-test': 'reconcile-date' }, t('pay.compareHint')),
      h('div', { class: 'field field-end' }, h('button', { type: 'submit', 'data-test': 'reconcile-submit' }, t('pay.compare'))),
    ),
    report,
  );
}

function reportView(app, r) {
  const totals = (label, x = {}) =>
    h('tr', {}, h('td', {}, label), cell(x.payments ?? 0), cell(money(x.paid_fen)), cell(x.refunds ?? 0), cell(money(x.refunded_fen)));
  const items = r.items ?? [];
  return h(
    'div',
    { 'data-test': 'report', 'data-provider': r.provider, 'data-date': r.bill_date },
    h('h3', {}, `${r.provider} · ${r.bill_date}`),
    h('p', { class: 'muted' }, t('pay.checked'), ' ', time(r.checked_at), ` · ${r.source}`, r.bill_found ? null : ` · ${t('pay.noBill')}`),
    table(
      { 'data-test': 'report-totals' },
      ['', t('tab.payments'), t('pay.amount'), t('pay.refunds'), t('ps.refunded')],
      [totals(t('pay.bill'), r.bill), totals(t('pay.here'), r.here)],
    ),
    h(
      'p',
      { class: r.differences ? 'status-bad' : 'status-ok', 'data-test': 'report-differences', 'data-value': r.differences },
      `${t('pay.differences')}: ${num(r.differences)}`,
    ),
    items.length
      ? table(
          { 'data-test': 'differences' },
          [t('kind'), t('pay.tradeNo'), t('pay.refundNo'), t('pay.here'), t('pay.bill')],
          items.map((d) =>
            h(
              'tr',
              { 'data-test': 'difference-row', 'data-kind': d.kind },
              h('td', {}, h('code', {}, d.kind)),
              h('td', {}, d.order_id ? orderLink(app, d.order_id) : codeOr(d.out_trade_no)),
              h('td', {}, codeOr(d.out_refund_no)),
              h('td', {}, h('code', {}, compact(d.here))),
              h('td', {}, h('code', {}, compact(d.there))),
            ),
          ),
        )
      : null,
  );
}

function pageOrder({ name, body, role, item }) {
  const url = adminUrl(name, 'pay', 'orders', item);
  const back = crumb(`#/apps/${path(name)}/payments`, t('tab.payments'));
  const message = slot();
  const load = () =>
    Promise.all([api('GET', url), role]).then(
      ([order, mine]) => {
        const close = (area) =>
          busy(area, message, async () => {
            await api('POST', `${url}/close`, {});
            message.set(notice(t('done')));
            await load();
          });
        const refundable = ['paid', 'partly_refunded'].includes(order.state);
        body.set(
          back,
          h('h2', {}, h('code', {}, order.id)),
          message,
          orderDetails(name, order),
          order.state === 'created'
            ? h('div', { class: 'actions' }, confirmButton(t('pay.close'), t('sure'), t('yes'), 'close-order', close))
            : null,
          refundsSection(url, order, refundable && mine === 'owner', refundable, message, load),
          timeline(order.events ?? []),
          callbacksSection(name, order.id),
        );
      },
      (error) => body.set(back, errorBanner(error)),
    );
  load();
}

function orderDetails(app, o) {
  return h(
    'section',
    { class: 'card', 'data-test': 'order-details', 'data-state': o.state },
    h(
      'dl',
      { class: 'details' },
      detailRow(t('users.state'), payState(o.state), 'order-state'),
      detailRow(t('pay.amount'), money(o.amount_fen), 'order-amount'),
      detailRow(t('ps.refunded'), money(o.refunded_fen), 'order-refunded'),
      detailRow(t('pay.description'), o.description),
      detailRow(t('pay.provider'), o.provider),
      detailRow(t('users.id'), userLink(app, o.user_id)),
      detailRow(t('pay.tradeNo'), codeOr(o.out_trade_no)),
      detailRow(t('pay.transaction'), codeOr(o.transaction_id)),
      detailRow(t('pay.metadata'), h('code', {}, compact(o.metadata))),
      detailRow(t('data.created'), time(o.created_at, true)),
      detailRow(t('users.expires'), time(o.expires_at, true)),
      detailRow(t('ps.paid'), time(o.paid_at, true)),
    ),
  );
}

function refundsSection(url, order, owner, refundable, message, reload) {
  const refunds = order.refunds ?? [];
  const left = (order.amount_fen ?? 0) - (order.refunded_fen ?? 0);
  let form = null;
  const refund = (area) =>
    form.reportValidity() &&
    busy(area, message, async () => {
      const value = (key) => form.elements[`refund-${key}`].value.trim();
      const answer = await api('POST', `${url}/refunds`, {
        amount_fen: Math.round(Number(value('amount')) * 100),
        ...(value('reason') ? { reason: value('reason') } : {}),
      });
      message.set(notice(`${t('done')} ${answer?.out_refund_no ?? ''}`));
      await reload();
    });
  if (owner) {
    form = h(
      'form',
      { class: 'grid-form', 'data-test': 'refund-form', onsubmit: onSubmit(() => {}) },
      field('refund-amount', `${t('pay.amount')} (¥)`, {
        type: 'number',
        required: true,
        min: 0.01,
        step: 0.01,
        max: left / 100,
        value: (left / 100).toFixed(2),
        'data-test': 'refund-amount',
      }),
      field('refund-reason', t('pay.reason'), { maxlength: 80, autocomplete: 'off', 'data-test': 'refund-reason' }),
      h('div', { class: 'field field-end' }, confirmButton(t('pay.refund'), t('sure'), t('yes'), 'refund', refund)),
    );
  }
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('pay.refunds')),
    refunds.length
      ? table(
          { 'data-test': 'refunds' },
          [t('pay.refundNo'), t('pay.amount'), t('users.state'), t('pay.reason'), t('pay.transaction'), t('data.created')],
          refunds.map((r) =>
            h(
              'tr',
              { 'data-test': 'refund-row', 'data-id': r.out_refund_no, 'data-state': r.state },
              h('td', {}, h('code', {}, r.out_refund_no)),
              cell(money(r.amount_fen)),
              h('td', {}, payState(r.state)),
              h('td', {}, r.reason || '—'),
              h('td', {}, codeOr(r.refund_id)),
              h('td', { class: 'nowrap' }, time(r.created_at, true)),
            ),
          ),
        )
      : h('p', { class: 'muted', 'data-test': 'refunds' }, t('none')),
    form,
    refundable && !owner ? h('p', { class: 'muted' }, t('set.ownersOnly')) : null,
  );
}

function timeline(events) {
  const sorted = [...events].sort((a, b) => new Date(a.at) - new Date(b.at));
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('pay.timeline')),
    sorted.length
      ? table(
          { 'data-test': 'timeline' },
          [t('fn.at'), t('pay.event'), t('pay.source'), t('q.payload')],
          sorted.map((e) =>
            h(
              'tr',
              { 'data-test': 'event-row', 'data-name': e.name, 'data-source': e.source, class: e.source === 'admin' ? 'note' : null },
              h('td', { class: 'nowrap' }, time(e.at, true)),
              h('td', {}, h('code', {}, e.name)),
              h('td', {}, h('span', { class: 'badge' }, e.source === 'admin' ? t('pay.note') : e.source)),
              h('td', {}, unfold(h('code', {}, compact(e.payload)), e.payload)),
            ),
          ),
        )
      : h('p', { class: 'muted', 'data-test': 'timeline' }, t('none')),
  );
}

// ---------------------------------------------------------------------------------------------
// Realtime: settings (developers edit them), presence and messages (developers)

function pageRealtime({ name, body, role }) {
  const url = adminUrl(name, 'realtime');
  Promise.all([api('GET', url), role]).then(
    ([settings, mine]) => {
      const summary = slot();
      summary.set(realtimeSummary(settings));
      body.set(
        summary,
        writer(mine)
          ? [...liveSections(name, url), realtimeEditor(url, settings, summary), presenceSection(url), sendSection(url)]
          : h('section', { class: 'card' }, h('h2', {}, t('rt.json')), h('pre', { class: 'source', 'data-test': 'realtime-json' }, pretty(settings))),
      );
    },
    (error) => body.set(errorBanner(error)),
  );
}

function realtimeSummary(s) {
  const rule = (r) => ruleText(r ?? null);
  const kept = (history) => (history ? t('rt.kept', { count: num(history.count), secs: num(history.age_secs) }) : '—');
  const kinds = Object.entries(s?.channels ?? {});
  return h(
    'section',
    { class: 'card', 'data-test': 'realtime-settings' },
    h('h2', {}, t('rt.kinds')),
    kinds.length
      ? table(
          { 'data-test': 'realtime-kinds' },
          [t('kind'), t('rt.join'), t('rt.publish'), t('rt.presence'), t('q.retention')],
          kinds.map(([kind, c]) =>
            h(
              'tr',
              { 'data-test': 'kind-row', 'data-kind': kind },
              h('td', {}, h('code', {}, kind)),
              ['join', 'publish', 'presence'].map((act) => h('td', {}, rule(c?.rules?.[act]))),
              h('td', {}, kept(c?.history)),
            ),
          ),
        )
      : h('p', { class: 'muted', 'data-test': 'realtime-kinds' }, t('none')),
  );
}

function realtimeEditor(url, settings, summary) {
  const message = slot();
  const save = (form) =>
    busy(form, message, async () => {
      const saved = await api('PUT', url, parseObject(form.elements['realtime-json'].value));
      summary.set(realtimeSummary(saved));
      form.elements['realtime-json'].value = pretty(saved);
      message.set(notice(t('done')));
    });
  return h(
    'section',
    { class: 'card' },
    message,
    h(
      'form',
      { class: 'stack', onsubmit: onSubmit(save) },
      field(
        'realtime-json',
        t('rt.json'),
        { rows: 14, spellcheck: 'false', value: pretty(settings), 'data-test': 'realtime-json' },
        t('rt.jsonHint'),
        'textarea',
      ),
      h('button', { type: 'submit', class: 'button-primary', 'data-test': 'realtime-save' }, t('data.save')),
    ),
  );
}

function presenceSection(url) {
  let channel = '';
  const members = pager(
    'presence',
    (after) => api('GET', `${url}/channels/${path(channel)}/presence?${query({ after, limit: 100 })}`),
    (answer) => answer?.next,
    (answer) => [
      h('p', { 'data-test': 'presence-count', 'data-value': answer?.count ?? 0 }, t('rt.count', { n: num(answer?.count) })),
      answer?.members?.length
        ? table(
            {},
            [t('rt.member'), t('users.id'), t('users.state')],
            answer.members.map((m) =>
              h(
                'tr',
                { 'data-test': 'member-row', 'data-member': m.member },
                h('td', {}, h('code', {}, m.member)),
                h('td', {}, codeOr(m.user)),
                h('td', {}, h('code', {}, compact(m.state))),
              ),
            ),
          )
        : h('p', { class: 'muted' }, t('none')),
    ],
  );
  const look = (form) => {
    channel = form.elements['presence-channel'].value.trim();
    members.load(0);
  };
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('rt.presence')),
    h(
      'form',
      { class: 'toolbar filters', onsubmit: onSubmit(look) },
      h('label', { for: 'presence-channel' }, t('rt.channel')),
      h('input', {
        id: 'presence-channel',
        required: true,
        maxlength: 161,
        autocomplete: 'off',
        spellcheck: 'false',
        placeholder: t('rt.channelHint'),
        'data-test': 'presence-channel',
      }),
      h('button', { type: 'submit', 'data-test': 'presence-submit' }, t('show')),
    ),
    members.list,
    members.bar,
  );
}

/**
 * The console's own socket to an app (docs/console.md): `heard` gets each message the server
 * sends, then `{type: 'closed', code, reason}` once. What is sent before it opens waits.
 */
function liveSocket(app, heard) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${scheme}://${location.host}/console/api/apps/${path(app)}/live`);
  const waiting = [];
  let closed = false;
  ws.onopen = () => waiting.splice(0).forEach((m) => ws.send(m));
  ws.onmessage = (event) => {
    if (closed) return; // closed on this side: what was still on its way is not wanted
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    heard(message);
  };
  ws.onclose = (event) => {
    if (closed) return;
    closed = true;
    heard({ type: 'closed', code: event.code, reason: event.reason });
  };
  return {
    send(message) {
      const text = JSON.stringify(message);
      if (ws.readyState === WebSocket.OPEN) ws.send(text);
      else if (ws.readyState === WebSocket.CONNECTING) waiting.push(text);
    },
    /** Closes it on the page's side: `heard` hears no more. */
    close() {
      closed = true;
      ws.close(1000);
    },
  };
}

/** The sockets list and the channel watcher, over one console socket while the page is shown. */
function liveSections(app, url) {
  const sockets = socketsSection(url);
  const watch = watchSection();
  leave?.();
  const live = liveSocket(app, (m) => {
    if (m.type === 'sockets') sockets.counted(m);
    else watch.heard(m);
  });
  watch.live = live;
  leave = () => live.close();
  return [sockets, channelsSection(url, watch), watch];
}

/** The app's live channels (on this node) with their counts; a name opens it in the watcher. */
function channelsSection(url, watch) {
  const channels = pager(
    'channels',
    (after) => api('GET', `${url}/channels?${query({ after, limit: 50 })}`),
    (answer) => answer?.next,
    (answer) => [
      h('p', { 'data-test': 'channels-count', 'data-value': answer?.count ?? 0 }, t('rt.channelsNow', { n: num(answer?.count) })),
      answer?.channels?.length
        ? table(
            {},
            [t('rt.channel'), t('rt.subscribers'), t('rt.presentNow'), t('rt.lastSeq'), ''],
            answer.channels.map((c) =>
              h(
                'tr',
                { 'data-test': 'channel-row', 'data-channel': c.name },
                h('td', {}, h('code', {}, c.name)),
                cell(num(c.subscribers)),
                cell(num(c.present)),
                cell(num(c.seq)),
                h('td', {}, h('button', { type: 'button', class: 'button-small', 'data-test': 'watch-row', onclick: () => watch.watch(c.name) }, t('rt.watchButton'))),
              ),
            ),
          )
        : h('p', { class: 'muted' }, t('none')),
    ],
  );
  channels.load(0);
  return h(
    'section',
    { class: 'card', 'data-test': 'channels-section' },
    cardHead(t('rt.channels'), refreshButton(() => channels.reload())),
    channels.list,
    channels.bar,
  );
}

/** The app's open sockets (on this node): live counts, and a paged list. */
function socketsSection(url) {
  const count = h('strong', { 'data-test': 'sockets-count', 'data-value': '' }, '—');
  const users = h('strong', { 'data-test': 'sockets-users', 'data-value': '' }, '—');
  const counted = (answer) => {
    count.dataset.value = String(answer?.count ?? 0);
    count.textContent = num(answer?.count ?? 0);
    users.dataset.value = String(answer?.users ?? 0);
    users.textContent = num(answer?.users ?? 0);
  };
  const sockets = pager(
    'sockets',
    (after) => api('GET', `${url}/sockets?${query({ after, limit: 50 })}`),
    (answer) => answer?.next,
    (answer) => {
      counted(answer);
      return answer?.sockets?.length
        ? table(
            {},
            [t('rt.socket'), t('users.id'), t('rt.caller'), t('rt.opened'), t('rt.subscriptions')],
            answer.sockets.map((s) =>
              h(
                'tr',
                { 'data-test': 'socket-row', 'data-socket': s.id },
                h('td', {}, h('code', {}, s.id)),
                h('td', {}, codeOr(s.user)),
                h('td', {}, t(`rt.caller.${s.caller}`)),
                h('td', { class: 'nowrap' }, time(s.opened_at, true)),
                cell(s.subscriptions),
              ),
            ),
          )
        : h('p', { class: 'muted' }, t('none'));
    },
  );
  sockets.load(0);
  const section = h(
    'section',
    { class: 'card', 'data-test': 'sockets-section' },
    cardHead(t('rt.sockets'), refreshButton(() => sockets.reload())),
    h('p', {}, t('rt.socketsNow'), ' ', count, ' · ', t('rt.usersNow'), ' ', users),
    sockets.list,
    sockets.bar,
  );
  section.counted = counted;
  return section;
}

/** XpmJS's channel debugger: a channel's messages and presence changes as they happen. */
function watchSection() {
  const message = slot();
  const chips = h('div', { class: 'actions', 'data-test': 'watched' });
  const rows = h('tbody', {});
  const traffic = h('table', { class: 'table', 'data-test': 'traffic' }, h('thead', {}, h('tr', {}, [t('fn.at'), t('rt.channel'), t('kind'), t('rt.from'), t('rt.data')].map((c) => h('th', {}, c)))), rows);
  const watched = new Set();
  const line = (channel, kind, from, data) => {
    rows.prepend(
      h(
        'tr',
        { 'data-test': 'traffic-row', 'data-kind': kind, 'data-channel': channel },
        h('td', { class: 'nowrap' }, time(new Date().toISOString(), true)),
        h('td', {}, h('code', {}, channel)),
        h('td', {}, h('span', { class: 'badge' }, kind)),
        h('td', {}, codeOr(from)),
        h('td', {}, h('code', {}, compact(data))),
      ),
    );
    while (rows.children.length > 200) rows.lastChild.remove();
  };
  const chip = (channel) =>
    h(
      'span',
      { class: 'badge badge-developer', 'data-test': 'watched-channel', 'data-channel': channel },
      channel,
      ' ',
      h('button', { type: 'button', class: 'button-small', 'aria-label': t('rt.unwatch'), 'data-test': 'unwatch', onclick: () => section.live?.send({ type: 'unwatch', channel }) }, '×'),
    );
  const showChips = () => chips.replaceChildren(...[...watched].map(chip));
  const heard = (m) => {
    if (m.type === 'message') line(m.channel, 'message', m.from, m.data);
    else if (m.type === 'presence_diff') line(m.channel, m.join ? 'join' : 'leave', m.join?.user ?? m.leave?.member, m.join?.state ?? null);
    else if (m.type === 'watching') watched.add(m.channel) && showChips();
    else if (m.type === 'unwatched') watched.delete(m.channel) && showChips();
    else if (m.type === 'error') message.set(errorBanner(new ApiError(400, m.code, m.message)));
    else if (m.type === 'closed') {
      section.live = null;
      watched.clear();
      showChips();
      if (m.code !== 1000) message.set(errorBanner(new ApiError(0, m.reason || 'closed', t('rt.socketClosed'))));
    }
  };
  const watchChannel = (channel) => {
    message.set();
    if (!section.live) return message.set(errorBanner(new ApiError(0, 'closed', t('rt.socketClosed'))));
    section.live.send({ type: 'watch', channel });
  };
  const watch = (form) => watchChannel(form.elements['watch-channel'].value.trim());
  const section = h(
    'section',
    { class: 'card', 'data-test': 'watch-section' },
    h('h2', {}, t('rt.watch')),
    h('p', { class: 'muted' }, t('rt.watchHint')),
    message,
    h(
      'form',
      { class: 'toolbar filters', onsubmit: onSubmit(watch) },
      h('label', { for: 'watch-channel' }, t('rt.channel')),
      h('input', { id: 'watch-channel', required: true, maxlength: 161, autocomplete: 'off', spellcheck: 'false', placeholder: t('rt.channelHint'), 'data-test': 'watch-channel' }),
      h('button', { type: 'submit', 'data-test': 'watch-submit' }, t('rt.watchButton')),
    ),
    chips,
    traffic,
  );
  section.heard = heard;
  section.watch = watchChannel;
  return section;
}

function sendSection(url) {
  const message = slot();
  const send = (form) =>
    busy(form, message, async () => {
      const data = parseJson(form.elements['send-data'].value);
      const to = `${form.elements['send-target'].value}/${path(form.elements['send-to'].value.trim())}`;
      const answer = await api('POST', `${url}/${to}/messages`, { data });
      message.set(notice(`${t('done')} seq ${answer?.seq ?? ''}`));
    });
  return h(
    'section',
    { class: 'card', 'data-test': 'send-section' },
    h('h2', {}, t('rt.send')),
    message,
    h(
      'form',
      { class: 'grid-form', onsubmit: onSubmit(send) },
      selectField('send-target', t('rt.to'), [option('channels', t('rt.channel')), option('users', t('users.id'))], { 'data-test': 'send-target' }),
      field(
        'send-to',
        `${t('rt.channel')} / ${t('users.id')}`,
        { required: true, autocomplete: 'off', spellcheck: 'false', 'data-test': 'send-to' },
        t('rt.channelHint'),
      ),
      field(
        'send-data',
        t('rt.data'),
        { rows: 3, required: true, spellcheck: 'false', value: '{"text": "hello"}', 'data-test': 'send-data' },
        null,
        'textarea',
      ),
      h('div', { class: 'field field-end' }, h('button', { type: 'submit', class: 'button-primary', 'data-test': 'send-submit' }, t('rt.send'))),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Settings: login providers (owners change them; secrets write-only), functions' env

const PROVIDERS = ['wechat', 'qq', 'douyin', 'alipay', 'password', 'anonymous', 'dev'];
/** [field, words, secret (write-only), textarea] of each kind of provider. */
const PROVIDER_FIELDS = {
  platform: [
    ['appid', 'set.appid'],
    ['secret', 'set.secret', true],
    ['base_url', 'set.baseUrl'],
  ],
  alipay: [
    ['app_id', 'set.appid'],
    ['private_key', 'set.privateKey', true, true],
    ['alipay_public_key', 'set.publicKey', false, true],
    ['base_url', 'set.baseUrl'],
  ],
};
const providerFields = (id) => PROVIDER_FIELDS[/^(wechat|qq|douyin)\b/.test(id) ? 'platform' : /^alipay\b/.test(id) ? 'alipay' : ''] ?? [];

function pageSettings({ name, body, role }) {
  role.then((mine) => body.set(providersSection(name, mine === 'owner'), envSection(name, writer(mine)), schedulesSection(name), limitsSection(name)));
}

function providersSection(app, owner) {
  const message = slot();
  const list = slot();
  const editor = slot();
  list.set(loading());
  const load = async () => {
    const answers = await Promise.allSettled(PROVIDERS.map((p) => api('GET', adminUrl(app, 'auth', 'providers', p))));
    const failed = answers.find((a) => a.status === 'rejected');
    list.set(failed ? errorBanner(failed.reason) : providersTable(answers.map((a) => a.value ?? {}), owner ? edit : null));
  };
  const done = (text) => {
    editor.set();
    message.set(notice(text));
    load();
  };
  const edit = (view) => {
    message.set();
    editor.set(providerForm(app, view, done, () => editor.set()));
    editor.querySelector('input')?.focus();
  };
  load();
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('set.providers')),
    owner ? null : h('p', { class: 'muted' }, t('set.ownersOnly')),
    message,
    list,
    editor,
  );
}

function providersTable(views, edit) {
  const button = { type: 'button', class: 'button-small', 'data-test': 'edit-provider' };
  return table(
    { 'data-test': 'providers' },
    [t('users.provider'), t('set.enabled'), t('tab.settings'), t('set.secret'), t('data.updated'), ''],
    views.map((v) => {
      const fields = providerFields(v.provider);
      const secret = fields.find(([, , hidden]) => hidden)?.[0];
      return h(
        'tr',
        { 'data-test': 'provider-row', 'data-provider': v.provider, 'data-enabled': String(Boolean(v.enabled)) },
        h('td', {}, t(`p.${v.provider}`), ' ', h('code', { class: 'muted' }, v.provider)),
        h('td', { class: v.enabled ? 'status-ok' : 'muted' }, t(v.enabled ? 'yes' : 'no')),
        h(
          'td',
          {},
          fields
            .filter(([key, , hidden, long]) => !hidden && !long && v[key])
            .map(([key, words]) => h('div', {}, h('span', { class: 'muted' }, `${t(words)}: `), h('code', {}, v[key]))),
        ),
        h(
          'td',
          {},
          secret ? (v[secret] ? h('span', { class: 'badge badge-developer', 'data-test': 'provider-secret-set' }, t('set.isSet')) : t('set.notSet')) : '—',
        ),
        h('td', { class: 'nowrap' }, time(v.updated_at)),
        h('td', {}, edit ? h('button', { ...button, 'data-provider': v.provider, onclick: () => edit(v) }, t('data.edit')) : null),
      );
    }),
  );
}

/** A provider's form: its secrets never prefilled, and needed by every save. */
function providerForm(app, view, done, cancel) {
  const id = view.provider;
  const message = slot();
  const fields = providerFields(id);
  const save = (form) =>
    busy(form, message, async () => {
      const body = { enabled: form.elements['pf-enabled'].checked };
      for (const [key, , hidden] of fields) {
        const value = form.elements[`pf-${key}`].value;
        if (value.trim()) body[key] = hidden ? value : value.trim();
      }
      await api('PUT', adminUrl(app, 'auth', 'providers', id), body);
      done(t('done'));
    });
  return h(
    'form',
    { class: 'card stack editor-card', 'data-test': 'provider-form', 'data-provider': id, onsubmit: onSubmit(save) },
    h('h3', {}, t(`p.${id}`), ' ', h('code', { class: 'muted' }, id)),
    message,
    h(
      'label',
      { class: 'check' },
      h('input', {
        type: 'checkbox',
        id: 'pf-enabled',
        name: 'pf-enabled',
        checked: Boolean(view.enabled),
        'data-test': 'provider-input',
        'data-field': 'enabled',
      }),
      t('set.enabled'),
    ),
    fields.map(([key, words, hidden, long]) =>
      field(
        `pf-${key}`,
        t(words),
        {
          required: key !== 'base_url',
          autocomplete: hidden ? 'new-password' : 'off',
          spellcheck: 'false',
          type: hidden && !long ? 'password' : null,
          rows: long ? 4 : null,
          value: hidden ? '' : view[key] ?? '',
          'data-test': 'provider-input',
          'data-field': key,
        },
        hidden ? `${t(view[key] ? 'set.isSet' : 'set.notSet')} · ${t('set.secretHint')}` : null,
        long ? 'textarea' : 'input',
      ),
    ),
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'submit', class: 'button-primary', 'data-test': 'provider-save' }, t('data.save')),
      h('button', { type: 'button', class: 'button-quiet', onclick: cancel }, t('cancel')),
    ),
  );
}

/** The functions' cron schedules, as their deploys declare them. */
function schedulesSection(app) {
  const list = slot();
  loadInto(list, api('GET', adminUrl(app, 'functions')), (answer) => {
    const rows = (answer?.items ?? []).flatMap((f) => (f.schedules ?? []).map((s) => [f.name, s]));
    if (!rows.length) return h('p', { class: 'muted', 'data-test': 'schedules' }, t('set.noSchedules'));
    return table(
      { 'data-test': 'schedules' },
      [t('tab.functions'), t('set.cron'), t('set.timezone'), t('rt.data')],
      rows.map(([fn, s]) =>
        h(
          'tr',
          { 'data-test': 'schedule-row', 'data-function': fn },
          h('td', {}, h('a', { href: `#/apps/${path(app)}/functions` }, h('code', {}, fn))),
          h('td', {}, h('code', {}, s.cron)),
          h('td', {}, s.timezone ?? 'UTC'),
          h('td', {}, s.data === null || s.data === undefined ? '—' : h('code', {}, compact(s.data))),
        ),
      ),
    );
  });
  return h('section', { class: 'card' }, h('h2', {}, t('set.schedules')), h('p', { class: 'muted' }, t('set.schedulesHint')), list);
}

/** The limits every app of the instance runs under (from its configuration). */
function limitsSection(app) {
  const list = slot();
  const quota = (n) => (n ? bytes(n) : t('set.unlimited'));
  const count = (n) => (n ? num(n) : t('set.unlimited'));
  loadInto(list, api('GET', adminUrl(app, 'limits')), (l) =>
    table(
      { 'data-test': 'limits' },
      [t('set.limit'), t('set.value')],
      [
        ['lim.body', bytes(l.max_body_bytes)],
        ['lim.perAddress', count(l.max_connections_per_address)],
        ['lim.token', `${num(l.access_token_ttl_secs)} s`],
        ['lim.session', t('lim.days', { n: num(l.session_ttl_days) })],
        ['lim.loginsIp', num(l.logins_per_ip_per_minute)],
        ['lim.loginsApp', num(l.logins_per_app_per_minute)],
        ['lim.passwords', num(l.password_failures_per_account_per_minute)],
        ['lim.timeout', `${num(l.function_default_timeout_ms)} ms / ${num(l.function_max_timeout_ms)} ms`],
        ['lim.memory', `${num(l.function_default_memory_mb)} MB / ${num(l.function_max_memory_mb)} MB`],
        ['lim.concurrent', num(l.function_max_concurrent)],
        ['lim.logs', num(l.function_log_entries)],
        ['lim.appFiles', `${quota(l.file_app_bytes)} · ${count(l.file_app_files)}`],
        ['lim.userFiles', `${quota(l.file_user_bytes)} · ${count(l.file_user_files)}`],
        ['lim.sockets', num(l.realtime_max_connections)],
        ['lim.userSockets', num(l.realtime_max_connections_per_user)],
        ['lim.queue', `${bytes(l.queue_max_payload_bytes)} · ${num(l.queue_max_queues)}`],
      ].map(([key, value]) => h('tr', { 'data-test': 'limit-row', 'data-limit': key }, h('td', {}, t(key)), h('td', {}, value))),
    ),
  );
  return h('section', { class: 'card' }, h('h2', {}, t('set.limits')), h('p', { class: 'muted' }, t('set.limitsHint')), list);
}

function envSection(app, write) {
  const url = adminUrl(app, 'env');
  const message = slot();
  const list = slot();
  list.set(loading());
  const change = (el, name, value) =>
    busy(el, message, async () => {
      await api(value === undefined ? 'DELETE' : 'PUT', `${url}/${path(name)}`, value === undefined ? undefined : { value });
      message.set(notice(t('done')));
      if (value !== undefined) el.reset();
      await load();
    });
  const load = () =>
    loadInto(list, api('GET', url), (answer) => {
      const names = answer?.names ?? [];
      if (!names.length) return h('p', { class: 'muted', 'data-test': 'env' }, t('none'));
      return table(
        { 'data-test': 'env' },
        [t('env.name'), ''],
        names.map((name) =>
          h(
            'tr',
            { 'data-test': 'env-row', 'data-name': name },
            h('td', {}, h('code', {}, name)),
            h(
              'td',
              {},
              write ? confirmButton(t('data.delete'), t('sure'), t('yes'), 'delete-env', (area) => change(area, name), { 'data-name': name }) : null,
            ),
          ),
        ),
      );
    });
  load();
  const set = (form) => change(form, form.elements['env-name'].value.trim(), form.elements['env-value'].value);
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('env.title')),
    h('p', { class: 'muted' }, t('env.hint')),
    message,
    list,
    write
      ? h(
          'form',
          { class: 'grid-form', onsubmit: onSubmit(set) },
          field(
            'env-name',
            t('env.name'),
            { required: true, maxlength: 64, pattern: '[A-Z_][A-Z0-9_]*', autocomplete: 'off', spellcheck: 'false', 'data-test': 'env-name' },
            t('env.nameHint'),
          ),
          field('env-value', t('env.value'), { required: true, rows: 2, autocomplete: 'off', spellcheck: 'false', 'data-test': 'env-value' }, null, 'textarea'),
          h('div', { class: 'field field-end' }, h('button', { type: 'submit', class: 'button-primary', 'data-test': 'env-submit' }, t('data.save'))),
        )
      : null,
  );
}

// ---------------------------------------------------------------------------------------------
// People

function pagePeople(main) {
  main.setAttribute('data-test', 'people-page');
  const message = slot();
  const list = slot();
  list.set(loading());
  const reload = async () => {
    const [people, apps] = await Promise.allSettled([api('GET', '/console/api/people'), api('GET', '/console/api/apps')]);
    if (people.status === 'rejected') return list.set(errorBanner(people.reason));
    const appNames = (apps.value?.items ?? []).map((a) => a.name);
    return list.set(peopleTable(people.value?.items ?? [], appNames, message, reload));
  };
  append(main, setTitle(t('people.title')), message, list, addPersonForm(reload));
  reload();
}

function peopleTable(people, appNames, message, reload) {
  const rows = people.map((person) => personRow(person, appNames, message, reload));
  return table(
    { 'data-test': 'people-table' },
    [t('field.name'), t('field.email'), t('people.instanceRole'), t('people.apps'), t('people.setRole'), t('people.actions')],
    rows,
  );
}

function personRow(person, appNames, message, reload) {
  const base = `/console/api/people/${path(person.id)}`;
  /** Runs a change to this person, then shows the list again (or the error above it). */
  const change = (el, work) => busy(el, message, async () => {
    await work();
    await reload();
  });
  const roles = Object.entries(person.apps ?? {}).sort(([a], [b]) => a.localeCompare(b));
  const roleList = roles.length
    ? h(
        'ul',
        { class: 'role-list' },
        roles.map(([app, role]) => {
          const item = h(
            'li',
            { 'data-test': 'person-app-role', 'data-app': app, 'data-role': role },
            h('code', {}, app),
            roleBadge(role),
            h(
              'button',
              {
                type: 'button',
                class: 'button-small button-quiet',
                'data-test': 'revoke-role',
                'data-app': app,
                'aria-label': t('people.removeLabel', { app }),
                onclick: () => change(item, () => api('DELETE', `${base}/apps/${path(app)}`)),
              },
              t('people.remove'),
            ),
          );
          return item;
        }),
      )
    : h('span', { class: 'muted' }, t('people.none'));
  const id = (what) => `${what}-${person.id}`;
  const grant = appNames.length
    ? h(
        'form',
        {
          class: 'grant',
          onsubmit: onSubmit((form) =>
            change(form, () =>
              api('PUT', `${base}/apps/${path(form.elements[id('app')].value)}`, { role: form.elements[id('role')].value }),
            ),
          ),
        },
        h('label', { for: id('app'), class: 'visually-hidden' }, t('people.grantApp')),
        h('select', { id: id('app'), 'data-test': 'grant-app' }, appNames.map((name) => option(name, name))),
        h('label', { for: id('role'), class: 'visually-hidden' }, t('people.grantRole')),
        h('select', { id: id('role'), 'data-test': 'grant-role' }, roleOptions(APP_ROLES, 'viewer')),
        h('button', { type: 'submit', class: 'button-small', 'data-test': 'grant-submit' }, t('people.grant')),
      )
    : h('span', { class: 'muted' }, t('people.noApps'));
  const actions = slot();
  const idle = () =>
    actions.set(
      h('button', { type: 'button', class: 'button-small button-danger', 'data-test': 'delete-person', onclick: ask }, t('people.delete')),
    );
  const ask = () =>
    actions.set(
      h('span', { class: 'muted' }, t('people.deleteQuestion', { email: person.email })),
      ' ',
      h(
        'button',
        {
          type: 'button',
          class: 'button-small button-danger',
          'data-test': 'delete-person-confirm',
          onclick: () => change(actions, () => api('DELETE', base)),
        },
        t('people.deleteYes'),
      ),
      ' ',
      h('button', { type: 'button', class: 'button-small button-quiet', onclick: idle }, t('cancel')),
    );
  idle();
  const self = me?.id === person.id;
  return h(
    'tr',
    { 'data-test': 'person-row', 'data-email': person.email, 'data-id': person.id },
    h('td', {}, person.name, self ? [' ', h('span', { class: 'muted nowrap' }, t('people.you'))] : null),
    h('td', {}, person.email),
    h('td', { 'data-test': 'instance-role' }, roleBadge(person.instance_role)),
    h('td', {}, roleList),
    h('td', {}, grant),
    h('td', {}, actions),
  );
}

function addPersonForm(reload) {
  const message = slot();
  const submit = (form) =>
    busy(form, message, async () => {
      const email = form.elements['person-email'].value.trim();
      await api('POST', '/console/api/people', {
        email,
        name: form.elements['person-name'].value.trim(),
        password: form.elements['person-password'].value,
        instance_role: form.elements['person-role'].value,
      });
      form.reset();
      await reload();
      message.set(notice(t('people.added', { email })));
    });
  return h(
    'section',
    { class: 'card' },
    h('h2', {}, t('people.add')),
    message,
    h(
      'form',
      { class: 'grid-form', 'data-test': 'add-person-form', onsubmit: onSubmit(submit) },
      field('person-email', t('field.email'), { type: 'email', required: true, autocomplete: 'off', 'data-test': 'person-email' }),
      field('person-name', t('field.name'), { required: true, autocomplete: 'off', 'data-test': 'person-name' }),
      field(
        'person-password',
        t('field.password'),
        { type: 'password', required: true, autocomplete: 'new-password', 'data-test': 'person-password' },
        t('field.passwordHint'),
      ),
      selectField('person-role', t('people.instanceRole'), roleOptions(INSTANCE_ROLES, 'member'), { 'data-test': 'person-role' }),
      h('div', { class: 'field field-end' }, h('button', { type: 'submit', class: 'button-primary', 'data-test': 'person-submit' }, t('people.addSubmit'))),
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Audit log

function pageAudit(main) {
  main.setAttribute('data-test', 'audit-page');
  const message = slot();
  const tbody = h('tbody', {});
  const empty = h('p', { class: 'muted', hidden: true }, t('audit.empty'));
  const older = h('button', { type: 'button', hidden: true, 'data-test': 'audit-older' }, t('audit.older'));
  const filter = h('select', { id: 'audit-app', 'data-test': 'audit-app' }, option('', t('audit.allApps')));
  const headers = ['audit.seq', 'audit.at', 'audit.actor', 'audit.app', 'audit.action', 'audit.status'];
  const auditTable = h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { 'data-test': 'audit-table' },
      h('thead', {}, h('tr', {}, headers.map((key) => h('th', { scope: 'col' }, t(key))))),
      tbody,
    ),
  );
  let before = null;
  const load = async (fresh) => {
    if (fresh) {
      before = null;
      tbody.replaceChildren();
    }
    const query = new URLSearchParams({ limit: '50' });
    if (filter.value) query.set('app', filter.value);
    if (before !== null) query.set('before', String(before));
    older.disabled = true;
    message.set(fresh ? loading() : null);
    try {
      const answer = await api('GET', `/console/api/audit?${query}`);
      message.set();
      append(tbody, (answer?.items ?? []).map(auditRow));
      before = answer?.next_before ?? null;
    } catch (error) {
      message.set(errorBanner(error));
    }
    older.disabled = false;
    older.hidden = before === null;
    empty.hidden = tbody.children.length > 0;
  };
  filter.addEventListener('change', () => load(true));
  older.addEventListener('click', () => load(false));
  append(
    main,
    setTitle(t('audit.title')),
    h('div', { class: 'toolbar' }, h('label', { for: 'audit-app' }, t('audit.filter')), filter),
    message,
    auditTable,
    empty,
    h('div', { class: 'actions' }, older),
  );
  api('GET', '/console/api/apps').then(
    (answer) => append(filter, (answer?.items ?? []).map((a) => option(a.name, a.name))),
    () => {}, // The filter then offers only "all apps"; the log itself says what failed.
  );
  load(true);
}

function auditRow(entry) {
  const failed = Number(entry.status) >= 400;
  return h(
    'tr',
    { 'data-test': 'audit-row', 'data-seq': entry.seq },
    h('td', { class: 'num' }, entry.seq),
    h('td', {}, time(entry.at)),
    h('td', { 'data-test': 'audit-actor' }, entry.actor ?? '—'),
    h('td', { 'data-test': 'audit-entry-app' }, entry.app ? h('a', { href: `#/apps/${path(entry.app)}` }, entry.app) : '—'),
    h('td', { 'data-test': 'audit-action' }, h('code', {}, entry.action)),
    h('td', { class: `num ${failed ? 'status-bad' : 'status-ok'}`, 'data-test': 'audit-status' }, entry.status),
  );
}

// ---------------------------------------------------------------------------------------------
// Start

async function start() {
  document.documentElement.lang = lang;
  root.replaceChildren(h('main', { class: 'main' }, loading()));
  try {
    await loadState();
  } catch (error) {
    const again = h('button', { type: 'button', onclick: start }, t('retry'));
    root.replaceChildren(h('main', { class: 'main narrow' }, errorBanner(error), again));
    return;
  }
  window.addEventListener('hashchange', () => {
    revealed = null;
    render();
  });
  render();
}

start();
