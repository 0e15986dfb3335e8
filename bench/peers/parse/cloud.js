// Parse Server's cloud code for the records benchmark (bench/data_postgres.py): the server, not
// the client, decides who owns a todo, as Cloudlet's default rules do.
//
// A client's create gets the caller as `owner` whatever it sent; no client can change the owner
// afterwards. With BENCH_ACCESS=acl the record also gets an ACL that lets only its owner read
// and write it (reads are then filtered by ACL instead of by the pointer permissions on `owner`
// that the class's permissions set up otherwise). Requests with the master key (the seeding)
// set what they like.
const acl = process.env.BENCH_ACCESS === 'acl';

Parse.Cloud.beforeSave('Todo', request => {
  if (request.master) {
    return;
  }
  if (!request.user) {
    throw new Parse.Error(Parse.Error.OPERATION_FORBIDDEN, 'log in first');
  }
  if (request.original) {
    if (request.object.dirty('owner') || (acl && request.object.dirty('ACL'))) {
      throw new Parse.Error(Parse.Error.OPERATION_FORBIDDEN, 'the owner can not change');
    }
    return;
  }
  request.object.set('owner', request.user);
  if (acl) {
    const ownerOnly = new Parse.ACL();
    ownerOnly.setReadAccess(request.user.id, true);
    ownerOnly.setWriteAccess(request.user.id, true);
    request.object.setACL(ownerOnly);
  }
});
